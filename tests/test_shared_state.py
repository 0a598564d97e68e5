"""At scale: gateways share a PostgreSQL store and Redis counters (real servers, started by the tests)."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import openai
import pytest
from conftest import Gateway, Upstream, chat_body, cli, eventually, write_fleet

KEYS = {team: f"{team}-key-0123456789abcdef" for team in ("rpm", "budget", "steady", "single")}


def fleet_text(pg_url: str, redis_url: str, upstream_url: str) -> str:
    return f"""\
state: {{store: "{pg_url}", counters: "{redis_url}", flush_interval: 200ms, refresh_interval: 500ms}}
auth: {{admin_key: admin-key-0123456789abcdef}}
teams:
  rpm: {{keys: ["{KEYS["rpm"]}"], limits: {{rpm: 20}}}}
  budget: {{keys: ["{KEYS["budget"]}"], limits: {{tokens_per_day: 1000}}}}
  steady: {{keys: ["{KEYS["steady"]}"]}}
  single: {{keys: ["{KEYS["single"]}"], limits: {{concurrency: 1, tpm: 100000}}}}
deployments:
  up: {{kind: openai, urls: ["{upstream_url}"]}}
routes:
  chat: {{deployments: [up]}}
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory, postgres, redis_server):
    """Two gateway processes on one PostgreSQL and one Redis."""
    up = Upstream("--chunks", "50")
    path = write_fleet(tmp_path_factory.mktemp("shared"), fleet_text(postgres.url, redis_server.url, up.url))
    gws = [Gateway(path), Gateway(path)]
    yield gws, path
    for gw in gws:
        gw.stop()
    up.stop()


def _post(url: str, team: str, **extra) -> httpx.Response:
    return httpx.post(url + "/chat/completions", json=chat_body(**extra),
                      headers={"Authorization": f"Bearer {KEYS[team]}"}, timeout=30)  # fmt: skip


def _burst(gws, team: str, n: int, **extra) -> list[httpx.Response]:
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        return list(pool.map(lambda i: _post(gws[i % 2].url, team, **extra), range(n)))


def test_two_gateways_sharing_redis_admit_exactly_the_rpm_limit(pair):
    gws, _ = pair
    replies = _burst(gws, "rpm", 60)
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 20, statuses
    assert statuses.count(429) == 40
    served_by = {i % 2 for i, r in enumerate(replies) if r.status_code == 200}
    assert served_by == {0, 1}  # both gateways admitted some: the count is shared, not per process


def test_settling_releases_the_concurrency_slot_and_corrects_the_reservation(pair, redis_server):
    gws, _ = pair
    for i in range(6):  # one at a time, alternating gateways: each must find the slot released
        assert _post(gws[i % 2].url, "single", max_tokens=5).status_code == 200
    import asyncio

    from modelfleet.state.resp import RedisConnection

    async def tokens_counted() -> int:
        conn = RedisConnection(redis_server.url)
        window = await conn.call("HVALS", "mf:{single}:tpm")
        conn.close()
        return sum(int(v) for v in window)

    # Settled to what was used, not what was reserved.
    eventually(lambda: asyncio.run(tokens_counted()) == 6 * (12 + 5), 5, "settlements reached Redis")


def test_a_token_budget_holds_across_gateways_under_concurrency(pair):
    gws, _ = pair
    replies = _burst(gws, "budget", 40, max_tokens=50)
    ok = [r for r in replies if r.status_code == 200]
    assert ok and len(ok) < 40
    used = sum(r.json()["usage"]["total_tokens"] for r in ok)
    assert used <= 1000, f"{len(ok)} requests used {used} tokens of a 1000-token budget"


def test_admission_survives_redis_forgetting_its_scripts(pair, redis_server):
    import asyncio

    from modelfleet.state.resp import RedisConnection

    async def flush() -> None:
        conn = RedisConnection(redis_server.url)
        await conn.call("SCRIPT", "FLUSH")
        conn.close()

    gws, _ = pair
    assert _post(gws[0].url, "single", max_tokens=5).status_code == 200
    asyncio.run(flush())  # the gateways' connections stay up, but EVALSHA now answers NOSCRIPT
    for i in range(4):  # the script is loaded again, and the settlement (also NOSCRIPT) is sent again
        gw = gws[i % 2]
        eventually(lambda gw=gw: _post(gw.url, "single", max_tokens=5).status_code == 200, 5, "admitted again")


def test_limited_teams_get_503_while_redis_is_away_and_recover_on_a_fresh_one(pair, redis_server):
    gws, _ = pair
    redis_server.stop()
    try:
        away = _post(gws[0].url, "budget", max_tokens=5)
        assert away.status_code == 503 and "limit counters" in away.json()["error"]["message"]
        assert _post(gws[0].url, "steady").status_code == 200  # a team without limits never needs Redis
    finally:
        redis_server.start()  # empty: the scripts must be loaded again, the budget seeded again
    assert _post(gws[0].url, "budget", max_tokens=5).status_code in (200, 429)
    assert _post(gws[1].url, "budget", max_tokens=5).status_code in (200, 429)


def test_a_restarted_redis_learns_the_spent_budget_before_it_admits_again(pair, redis_server):
    """Nothing fails in between: Redis restarts empty between two requests. The gateways' new connections
    seed the day's spent tokens from the ledger before their first admission, so the budget holds."""
    import asyncio

    from modelfleet.state.counters import periods
    from modelfleet.state.resp import RedisConnection

    gws, path = pair
    eventually(lambda: _post(gws[0].url, "budget", max_tokens=50).status_code == 429, 20, "the budget spent")

    async def counted() -> int:
        conn = RedisConnection(redis_server.url)
        spent = await conn.call("GET", f"mf:{{budget}}:day:{periods(time.time())[0]}")
        conn.close()
        return int(spent)

    def ledger() -> int:
        usage = json.loads(cli("usage", "--team", "budget", "-f", str(path), "--json", "--by", "team").stdout)
        return usage[0]["total_tokens"] if usage else 0

    eventually(lambda: ledger() == asyncio.run(counted()), 10, "the ledger has every request Redis counted")
    redis_server.stop()
    redis_server.start()
    for gw in gws:
        refused = _post(gw.url, "budget", max_tokens=50)
        assert refused.status_code == 429 and "tokens_per_day" in refused.json()["error"]["message"], refused.text


def test_keys_and_usage_live_in_postgres(pair):
    gws, path = pair
    made = json.loads(cli("keys", "create", "--team", "steady", "-f", str(path), "--json").stdout)
    for gw in gws:  # a key made by the CLI works at once on every gateway
        client = openai.OpenAI(base_url=gw.url, api_key=made["key"], max_retries=0)
        assert client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]).choices

    def rows() -> list[dict]:
        return json.loads(cli("usage", "--team", "steady", "-f", str(path), "--json", "--by", "team").stdout)

    eventually(lambda: rows() and rows()[0]["requests"] >= 2, 10, "the usage flushed to PostgreSQL")


def test_known_keys_keep_working_while_the_database_is_away(pair, postgres):
    gws, path = pair
    gw = gws[0]
    before = json.loads(cli("usage", "--team", "steady", "-f", str(path), "--json", "--by", "team").stdout)
    postgres.stop()
    try:
        gw.wait_for("store unreachable", 10)  # a refresh failed: the gateway keeps what it knows
        for _ in range(5):
            assert _post(gw.url, "steady").status_code == 200
        unknown = httpx.post(gw.url + "/chat/completions", json=chat_body(),
                             headers={"Authorization": "Bearer mf-12345678-never-seen-before-key"})  # fmt: skip
        assert unknown.status_code == 503 and "key store is unreachable" in unknown.json()["error"]["message"]
    finally:
        postgres.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the usage counted while the database was away is written, not lost
        after = json.loads(cli("usage", "--team", "steady", "-f", str(path), "--json", "--by", "team").stdout)
        if after[0]["requests"] >= before[0]["requests"] + 5:
            break
        time.sleep(0.3)
    assert after[0]["requests"] == before[0]["requests"] + 5
    assert "store reachable again" in gw.output or "usage ledger" in gw.output
