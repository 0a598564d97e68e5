"""Teams, keys, limits and usage on the laptop default: SQLite and in-process counters.

A real gateway process, a fake upstream, the official openai SDK and the `modelfleet` CLI.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json

import httpx
import openai
import pytest
from conftest import Gateway, Upstream, chat_body, cli, eventually, write_fleet

ADMIN = "admin-key-0123456789abcdef"
KEYS = {team: f"{team}-key-0123456789abcdef" for team in ("quant", "eval", "limited", "budget")}


def fleet_text(tmp_path, upstream_url: str) -> str:
    return f"""\
server: {{drain_timeout: 10s}}
state: {{store: "sqlite:///{tmp_path}/modelfleet.db", flush_interval: 200ms, refresh_interval: 500ms}}
auth: {{admin_key: {ADMIN}}}
teams:
  quant: {{keys: ["{KEYS["quant"]}"], routes: [chat], tags: {{cost_center: cc-42}}}}
  eval: {{keys: ["{KEYS["eval"]}"], routes: [small]}}
  limited: {{keys: ["{KEYS["limited"]}"], limits: {{rpm: 3}}}}
  budget: {{keys: ["{KEYS["budget"]}"], routes: [chat], limits: {{tokens_per_day: 1000}}}}
deployments:
  up: {{kind: openai, urls: ["{upstream_url}"]}}
routes:
  chat: {{deployments: [up]}}
  small: {{deployments: [up]}}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teams")
    up = Upstream("--chunks", "50")
    path = write_fleet(tmp, fleet_text(tmp, up.url))
    gw = Gateway(path)
    yield gw, path, tmp
    gw.stop()
    up.stop()


@pytest.fixture
def gw(fleet):
    return fleet[0]


def sdk(gw, team: str | None = None, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key=key or KEYS.get(team or "", "none"), max_retries=0)


def test_a_missing_or_unknown_key_gets_401(gw):
    missing = httpx.post(gw.url + "/chat/completions", json=chat_body())
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        sdk(gw, key="mf-00000000-not-a-real-key").chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_team_sees_and_reaches_only_its_routes(gw):
    quant = sdk(gw, "quant")
    assert {m.id for m in quant.models.list()} == {"chat"}
    assert quant.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]).choices
    with pytest.raises(openai.PermissionDeniedError, match="team 'quant' may not use route 'small'"):
        quant.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        sdk(gw, "eval").chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    # An unknown model lists only the caller's own routes: no other team's route names leak.
    with pytest.raises(openai.NotFoundError) as err:
        sdk(gw, "eval").chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "available: small" in str(err.value) and "chat" not in str(err.value)


def test_an_exceeded_rpm_gets_429_with_retry_after_and_ratelimit_headers(gw):
    client = sdk(gw, "limited")
    ok = client.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert ok.headers["x-ratelimit-limit-requests"] == "3"
    assert ok.headers["x-ratelimit-remaining-requests"] == "2"
    for _ in range(2):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    refused = httpx.post(gw.url + "/chat/completions", json=chat_body(),
                         headers={"Authorization": f"Bearer {KEYS['limited']}"})  # fmt: skip
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    err = refused.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and "limits.rpm" in err["message"]


def test_concurrent_requests_cannot_overshoot_a_token_budget(gw):
    def one(_: int) -> httpx.Response:
        return httpx.post(gw.url + "/chat/completions", json=chat_body(max_tokens=50),
                          headers={"Authorization": f"Bearer {KEYS['budget']}"}, timeout=30)  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(one, range(40)))
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert ok and refused and len(ok) + len(refused) == 40
    assert all(r.json()["error"]["code"] == "insufficient_quota" for r in refused)
    used = sum(r.json()["usage"]["total_tokens"] for r in ok)
    assert used <= 1000, f"{len(ok)} requests used {used} tokens of a 1000-token budget"
    # The ledger agrees with what the answers said.
    mine = httpx.get(gw.url + "/usage", params={"since": "1d"}, headers={"Authorization": f"Bearer {KEYS['budget']}"})
    assert sum(r["total_tokens"] for r in mine.json()["data"]) == used


def test_embeddings_count_against_a_budget_without_a_max_tokens(gw):
    # The fake upstream refuses max_tokens on embeddings, as OpenAI does: none may be added on the way.
    reply = httpx.post(gw.url + "/embeddings", json={"model": "chat", "input": "hello"},
                       headers={"Authorization": f"Bearer {KEYS['budget']}"})  # fmt: skip
    assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] == 3


def test_keys_are_made_by_the_cli_shown_once_and_stored_hashed(fleet):
    gw, path, tmp = fleet
    made = json.loads(cli("keys", "create", "--team", "quant", "-f", str(path), "--json").stdout)
    key = made["key"]
    # A new key works at once on the running gateway.
    assert sdk(gw, key=key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    db = b"".join(p.read_bytes() for p in tmp.glob("modelfleet.db*"))
    assert key.encode() not in db
    assert hashlib.sha256(key.encode()).hexdigest().encode() in db
    listed = cli("keys", "list", "--team", "quant", "-f", str(path)).stdout
    assert made["id"] in listed and key not in listed
    cli("keys", "revoke", made["id"], "-f", str(path))
    # Revoked behind the gateway's back: gone within state.refresh_interval (500ms).
    refused = {"Authorization": f"Bearer {key}"}
    eventually(lambda: httpx.post(gw.url + "/chat/completions", json=chat_body(), headers=refused).status_code == 401,
               5, "the revoked key is refused")  # fmt: skip


def test_the_admin_api_has_its_own_key(gw, http):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert http.get(gw.base + "/admin/teams").status_code == 401
    assert http.get(gw.base + "/admin/teams", headers={"Authorization": f"Bearer {KEYS['quant']}"}).status_code == 401
    made = http.post(
        gw.base + "/admin/teams",
        headers=admin,
        json={"name": "finetune", "routes": ["small"], "limits": {"rpm": 100}, "tags": {"cc": "7"}},
    )
    assert made.status_code == 201, made.text
    bad = http.post(gw.base + "/admin/teams", headers=admin, json={"name": "x", "routes": ["nope"]})
    assert bad.status_code == 400 and "unknown route 'nope'" in bad.json()["error"]["message"]
    fleet_owned = http.post(gw.base + "/admin/teams", headers=admin, json={"name": "quant"})
    assert fleet_owned.status_code == 403
    key = http.post(gw.base + "/admin/teams/finetune/keys", headers=admin).json()
    client = sdk(gw, key=key["key"])
    assert client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}]).choices
    names = [t["name"] for t in http.get(gw.base + "/admin/teams", headers=admin).json()["data"]]
    assert {"quant", "eval", "finetune"} <= set(names)
    listed = http.get(gw.base + "/admin/teams/finetune/keys", headers=admin).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]] and key["key"] not in json.dumps(listed)
    assert http.delete(gw.base + f"/admin/keys/{key['id']}", headers=admin).status_code == 200
    with pytest.raises(openai.AuthenticationError):  # revoked through this gateway: at once
        client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])


def test_a_team_reads_its_own_usage_and_no_other(gw, http):
    sdk(gw, "eval").chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    quant = {"Authorization": f"Bearer {KEYS['quant']}"}
    other = http.get(gw.url + "/usage", params={"team": "eval"}, headers=quant)
    assert other.status_code == 403
    mine = http.get(gw.url + "/usage", headers=quant).json()["data"]
    assert mine and {r["team"] for r in mine} == {"quant"}
    everyone = http.get(gw.base + "/admin/usage", params={"by": "team"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert {"quant", "eval"} <= {r["team"] for r in everyone.json()["data"]}


def test_usage_and_spent_budgets_survive_a_sigterm_restart(tmp_path, start):
    up = start(Upstream, "--chunks", "40")
    path = write_fleet(tmp_path, fleet_text(tmp_path, up.url).replace("flush_interval: 200ms", "flush_interval: 1h"))
    gw = start(Gateway, path)
    budget = sdk(gw, "budget")
    for _ in range(10):  # 10 x (12 prompt + 40 completion) = 520 of 1000 tokens; nothing flushed yet (1h)
        budget.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=40)
    assert gw.stop() == 0  # SIGTERM: drain, then flush the ledger
    rows = json.loads(cli("usage", "--team", "budget", "-f", str(path), "--json", "--by", "team").stdout)
    assert rows == [{"team": "budget", "requests": 10, "errors": 0, "rate_limited": 0, "prompt_tokens": 120,
                     "completion_tokens": 400, "total_tokens": 520}]  # fmt: skip
    table = cli("usage", "--team", "budget", "-f", str(path)).stdout
    assert "budget" in table and "520" in table
    gw2 = start(Gateway, path)
    # The day's budget remembers the 520 spent before the restart: 520 + 480 + the prompt estimate > 1000,
    # where a fresh budget would admit it.
    with pytest.raises(openai.RateLimitError, match="tokens per day"):
        sdk(gw2, "budget").chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=480
        )
    assert (
        sdk(gw2, "budget")
        .chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=40)
        .choices
    )
