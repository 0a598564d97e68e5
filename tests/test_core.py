"""The core's promises, each once a bug found by running it: leases the server makes, secrets that never
print, one team registry, one deadline per request, wakes in worker mode and after a failed wake,
ejection and re-admission. Real processes throughout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import Gateway, Upstream, chat_body, cli, eventually, write_fleet

PY = sys.executable
KEY = "core-team-key-0123456789abcdef"


def limited_fleet(tmp_path, up, counters: str = "memory") -> str:
    return f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db", counters: "{counters}"}}
teams:
  quant: {{keys: ["{KEY}"], limits: {{concurrency: 2}}}}
deployments:
  up: {{kind: openai, urls: ["{up.url}"]}}
routes:
  chat: {{deployments: [up]}}
"""


@pytest.mark.parametrize("counters", ["memory", "redis"])
def test_a_shared_request_id_neither_shares_nor_frees_a_concurrency_slot(tmp_path, start, counters, request):
    url = request.getfixturevalue("redis_server").url if counters == "redis" else "memory"
    up = start(Upstream, "--delay", "0.6")
    gw = start(Gateway, write_fleet(tmp_path, limited_fleet(tmp_path, up, url)))
    headers = {"Authorization": f"Bearer {KEY}", "X-Request-ID": "same-id-for-all"}

    def post(_: int) -> int:
        return httpx.post(gw.url + "/chat/completions", json=chat_body(), headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(post, range(4)))
    assert statuses == [200, 200, 429, 429]
    # Every slot was given back: two more at once are admitted again.
    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(post, range(2))) == [200, 200]


def test_config_show_never_prints_a_secret(tmp_path):
    values = {
        "ADMIN": "admin-secret-value-0123456789",
        "TEAM": "team-secret-value-0123456789",
        "UPSTREAM": "upstream-secret-value-0123",
        "HF": "hf_secret_value_0123456789",
    }
    path = write_fleet(tmp_path, """\
auth: {admin_key: "${ADMIN}"}
teams: {quant: {keys: ["${TEAM}"]}}
deployments:
  up: {kind: openai, urls: ["http://127.0.0.1:9/v1"], api_key: "${UPSTREAM}"}
  sm: {kind: sagemaker, endpoint: tgi, container: messages,
        create: {image: img, role_arn: "arn:aws:iam::1:role/r", hf_token: "${HF}"}}
routes: {chat: {deployments: [up]}, sm: {deployments: [sm]}}
""")  # fmt: skip
    shown = cli("config", "show", "-f", str(path), env=values).stdout
    for name, value in values.items():
        assert value not in shown, f"{name} printed by config show"
    assert shown.count("**********") == 4  # each secret is there, masked
    # A mistake in a secret field names the field, never the value.
    bad = write_fleet(tmp_path, "teams: {quant: {keys: [tiny-secret]}}\n" + path.read_text().split("\n", 2)[2],
                      "bad.yaml")  # fmt: skip
    out = cli("config", "check", "-f", str(bad), env=values, check=False)
    assert out.returncode == 2 and "teams.quant.keys.0" in out.stderr and "tiny-secret" not in out.stderr


def test_keys_for_a_file_team_on_a_fresh_store_and_a_team_removed_from_the_file(tmp_path, start):
    up = start(Upstream)
    text = limited_fleet(tmp_path, up).replace("limits: {concurrency: 2}", "routes: [chat]")
    text = text.replace("teams:\n", 'teams:\n  other: {keys: ["other-key-0123456789abcdef"]}\n')
    path = write_fleet(tmp_path, text)
    # The README's own command, before any gateway ever ran on this store.
    made = json.loads(cli("keys", "create", "--team", "quant", "-f", str(path), "--json").stdout)
    gw = start(Gateway, path)
    auth = {"Authorization": f"Bearer {made['key']}"}
    assert httpx.post(gw.url + "/chat/completions", json=chat_body(), headers=auth).status_code == 200
    assert gw.stop() == 0
    # The file no longer has the team: it is over, and so are the keys made for it.
    path.write_text(text.replace(f'  quant: {{keys: ["{KEY}"], routes: [chat]}}\n', ""))
    teams = json.loads(cli("teams", "list", "-f", str(path), "--json").stdout)
    assert [t["name"] for t in teams] == ["other"]
    gw = start(Gateway, path)
    assert httpx.post(gw.url + "/chat/completions", json=chat_body(), headers=auth).status_code == 401


def test_one_deadline_bounds_retries_and_fallbacks(tmp_path, start):
    slow = [start(Upstream, "--delay", "3") for _ in range(2)]
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments:
  a: {{kind: openai, urls: ["{slow[0].url}"]}}
  b: {{kind: openai, urls: ["{slow[1].url}"]}}
routes:
  chat: {{deployments: {{a: 1}}, timeout: 1s, fallbacks: [spare]}}
  spare: {{deployments: [b]}}
""")  # fmt: skip
    gw = start(Gateway, path)
    started = time.monotonic()
    r = httpx.post(gw.url + "/chat/completions", json=chat_body(), timeout=10)
    elapsed = time.monotonic() - started
    # Each attempt used to get a fresh 1 s: a then spare's b took 2 s. Now the route's 1 s bounds both.
    assert r.status_code == 504 and elapsed < 1.6, (r.status_code, elapsed, r.text)
    assert "timeout" in r.json()["error"]["message"]


def test_a_replica_is_ejected_and_readmitted_when_it_answers_again(tmp_path, start):
    good = start(Upstream)
    bad = start(Upstream)
    bad_port = bad.port
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments:
  up: {{kind: openai, urls: ["{good.url}", "http://127.0.0.1:{bad_port}/v1"],
        health: {{interval: 30s, eject_after: 2, eject_for: 1s}}}}
routes:
  chat: {{deployments: [up]}}
""")  # fmt: skip
    gw = start(Gateway, path, wait_ready=True)
    assert _ready(gw, "up-1") == 1.0
    bad.stop()  # refuses connections from now on
    for _ in range(6):  # failures on the dead replica are retried on the good one
        assert httpx.post(gw.url + "/chat/completions", json=chat_body()).status_code == 200
    assert _ready(gw, "up-1") == 0.0
    start(Upstream, "--port", str(bad_port))
    eventually(lambda: _ready(gw, "up-1") == 1.0, 10, "the revived replica is readmitted")
    for _ in range(10):
        httpx.post(gw.url + "/chat/completions", json=chat_body())
    assert _handed(gw, "up-1") >= 3  # it serves again


def _metric(gw, name: str, replica: str) -> float:
    for line in httpx.get(gw.base + "/metrics").text.splitlines():
        if line.startswith(name + "{") and f'replica="{replica}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def _ready(gw, replica: str) -> float:
    return _metric(gw, "modelfleet_replica_ready", replica)


def _handed(gw, replica: str) -> float:
    return _metric(gw, "modelfleet_replica_requests_total", replica)


def test_config_check_refuses_what_workers_cannot_keep_exact(tmp_path):
    for extra, words in (
        ("deployments: {e: {kind: llama-cpp}}\nroutes: {chat: {deployments: [e]}}", "decodes one request"),
        ("deployments: {u: {kind: openai, urls: ['http://h:1/v1'], max_concurrency: 4}}\n"
         "routes: {chat: {deployments: [u]}}", "max_concurrency"),
        ("teams: {q: {keys: [qqqqqqqqqqqqqqqqqqqq], limits: {rpm: 5}}}\n"
         "deployments: {u: {kind: openai, urls: ['http://h:1/v1']}}\nroutes: {chat: {deployments: [u]}}",
         "state.counters: redis://"),
    ):  # fmt: skip
        path = write_fleet(tmp_path, "server: {workers: 2}\n" + extra)
        out = subprocess.run([PY, "-m", "modelfleet", "config", "check", "-f", str(path)], capture_output=True,
                             text=True)  # fmt: skip
        assert out.returncode == 2 and "server.workers" in out.stderr and words in out.stderr, out.stderr


MESSAGES_REPLY = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "awake"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}  # fmt: skip
OFF_HOURS = '{start: "0 3 1 1 *", stop: "0 4 1 1 *"}'  # on for one hour a year: now is off hours


def sagemaker_fleet(tmp_path, moto, endpoint: str, server: str = "", instance: str = "ml.g4dn.xlarge") -> str:
    create = f"{{image: img, role_arn: 'arn:aws:iam::123456789012:role/sm', instance_type: {instance}}}"
    return f"""\
{server}
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
auth: {{admin_key: admin-key-0123456789abcdef}}
deployments:
  sm: {{kind: sagemaker, endpoint: {endpoint}, container: messages, endpoint_url: '{moto.url}', create: {create},
        schedule: {OFF_HOURS}, wake_on_request: true, wake_timeout: 30s}}
routes:
  chat: {{deployments: [sm]}}
"""


def test_any_worker_can_wake_an_off_hours_deployment_through_the_primary(tmp_path, start, moto):
    path = write_fleet(tmp_path, sagemaker_fleet(tmp_path, moto, "core-workers", "server: {workers: 2}"))
    gw = start(Gateway, path, env=moto.env)
    gw.wait_for(r"worker \d+ on http://127\.0\.0\.1", 20)
    moto.queue_results(*[MESSAGES_REPLY] * 12)
    # Each request on a new connection: the kernel spreads them over both processes (SO_REUSEPORT).
    statuses = [httpx.post(gw.url + "/chat/completions", json=chat_body(), timeout=40).status_code for _ in range(12)]
    assert statuses == [200] * 12
    assert "woken by a request (through the primary)" in gw.output  # a worker asked, and was answered
    status = json.loads(cli("deployments", "status", "--json", "--url", gw.base, "--admin-key",
                            "admin-key-0123456789abcdef").stdout)  # fmt: skip
    assert status[0]["desired"] == "running" and status[0]["wakes"] == 1  # one wake, whoever asked


def test_a_failed_wake_answers_at_once_and_the_next_request_tries_again(tmp_path, start, moto):
    # moto refuses ml.g5 instance types in endpoint configs, as a real account without quota would.
    path = write_fleet(tmp_path, sagemaker_fleet(tmp_path, moto, "core-failing", instance="ml.g5.2xlarge"))
    gw = start(Gateway, path, env=moto.env)
    for _ in range(2):
        started = time.monotonic()
        r = httpx.post(gw.url + "/chat/completions", json=chat_body(), timeout=40)
        assert r.status_code == 503 and time.monotonic() - started < 10, r.text  # not wake_timeout's 30 s
        assert "wake failed" in r.json()["error"]["message"]
    eventually(lambda: gw.output.count("the wake failed") == 2, 5, "two wake attempts")  # not stuck "starting"
    ready = httpx.get(gw.base + "/readyz").json()
    assert "wake failed" in json.dumps(ready)
    status = json.loads(cli("deployments", "status", "--json", "--url", gw.base, "--admin-key",
                            "admin-key-0123456789abcdef").stdout)  # fmt: skip
    assert "start failed" in status[0]["error"]


def test_a_chat_template_that_refuses_is_a_400_and_one_that_breaks_a_502(tmp_path, start, moto):
    refuse = "{% if messages[0].role == 'system' %}{{ raise_exception('no system messages') }}{% endif %}x"
    (tmp_path / "refuse.jinja").write_text(refuse)
    (tmp_path / "broken.jinja").write_text("{{ 1 // 0 }}")
    create = "{image: img, role_arn: 'arn:aws:iam::123456789012:role/sm', instance_type: ml.g4dn.xlarge}"
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments:
  refuse: {{kind: sagemaker, endpoint: core-refuse, endpoint_url: '{moto.url}', create: {create},
            chat_template: '{tmp_path}/refuse.jinja'}}
  broken: {{kind: sagemaker, endpoint: core-broken, endpoint_url: '{moto.url}', create: {create},
            chat_template: '{tmp_path}/broken.jinja'}}
routes: {{refuse: {{deployments: [refuse]}}, broken: {{deployments: [broken]}}}}
""")  # fmt: skip
    gw = start(Gateway, path, env=moto.env)
    system = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    r = httpx.post(gw.url + "/chat/completions", json={"model": "refuse", "messages": system})
    assert r.status_code == 400 and "no system messages" in r.json()["error"]["message"]
    r = httpx.post(gw.url + "/chat/completions", json={"model": "broken", "messages": system})
    assert r.status_code == 502 and "chat template failed" in r.json()["error"]["message"]
    assert httpx.get(gw.base + "/healthz").status_code == 200


def test_a_redis_stall_leaks_no_concurrency_slot(tmp_path, start, redis_server):
    import signal as sig
    from concurrent.futures import ThreadPoolExecutor

    up = start(Upstream, "--delay", "1")
    gw = start(Gateway, write_fleet(tmp_path, limited_fleet(tmp_path, up, redis_server.url)))
    auth = {"Authorization": f"Bearer {KEY}"}

    def post(_: int = 0) -> int:
        return httpx.post(gw.url + "/chat/completions", json=chat_body(), headers=auth, timeout=20).status_code

    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(post) for _ in range(2)]
        time.sleep(0.3)  # both admitted, both waiting on the upstream
        redis_server.proc.send_signal(sig.SIGSTOP)  # their settlements will get no reply
        try:
            assert [f.result() for f in running] == [200, 200]
            assert post() == 503  # the counters are away
            time.sleep(2.5)  # the connection's watchdog gives up on what was in flight
        finally:
            redis_server.proc.send_signal(sig.SIGCONT)

    # Settlements and the undo of the refused admission are sent again: both slots come back at once,
    # not after the 15-minute lease expiry.
    def both_admitted() -> bool:
        with ThreadPoolExecutor(2) as pool:
            return sorted(pool.map(post, range(2))) == [200, 200]

    eventually(both_admitted, 15, "two concurrent requests admitted again")
