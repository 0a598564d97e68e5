"""A/B routing, failover, strict mode and load-aware replica choice, over real HTTP.

(A replica dying mid-stream ends with an explicit error event: test_gateway.py covers it.)
"""

from __future__ import annotations

import concurrent.futures
import math
import signal
import threading
import time

import httpx
import openai
import pytest
from conftest import Gateway, Upstream, chat_body, eventually, write_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failover")
    ups = {
        "a": Upstream("--chunks", "3"),
        "b": Upstream("--chunks", "3"),
        "ok": Upstream("--chunks", "3"),
        "broken": Upstream("--status", "500"),
        "busy": Upstream("--waiting", "10", "--kv-cache", "0.9"),
        "idle": Upstream("--waiting", "0"),
        "plain": Upstream(),  # serves no /metrics: its load is unknown
        "idle2": Upstream("--waiting", "0"),
    }
    u = {k: v.url for k, v in ups.items()}
    path = write_fleet(
        tmp,
        f"""\
state: {{store: "sqlite:///{tmp}/mf.db", flush_interval: 100ms}}
deployments:
  a: {{kind: openai, urls: ["{u["a"]}"]}}
  b: {{kind: openai, urls: ["{u["b"]}"]}}
  ok: {{kind: openai, urls: ["{u["ok"]}"]}}
  down: {{kind: openai, urls: ["http://127.0.0.1:9/v1"], health: {{interval: 60s}}}}
  mixed: {{kind: openai, urls: ["{u["broken"]}", "{u["ok"]}"], health: {{eject_after: 3, eject_for: 30s}}}}
  loaded:
    kind: openai
    urls: ["{u["busy"]}", "{u["idle"]}"]
    load_metrics: {{interval: 100ms, stale_after: 1s}}
  unknown:
    kind: openai
    urls: ["{u["plain"]}", "{u["idle2"]}"]
    load_metrics: {{interval: 100ms, stale_after: 1s}}
routes:
  ab: {{deployments: {{a: 80, b: 20}}}}
  sticky: {{deployments: {{a: 80, b: 20}}, sticky: "header:X-Session-ID"}}
  by-user: {{deployments: {{a: 50, b: 50}}, sticky: user}}
  strict: {{deployments: [down], fallbacks: none}}
  safe: {{deployments: [down], fallbacks: [ok-route]}}
  ok-route: {{deployments: [ok]}}
  mixed: {{deployments: [mixed]}}
  loaded: {{deployments: [loaded]}}
  unknown: {{deployments: [unknown]}}
""",
    )
    gw = Gateway(path, wait_ready=False)  # never "ready": the strict route's deployment is down on purpose
    eventually(lambda: httpx.get(gw.base + "/metrics").text.count("modelfleet_replica_engine_load{") >= 3, 10,
               "the engines' load readings")  # fmt: skip
    yield gw
    gw.stop()
    for up in ups.values():
        up.stop()


def served_by(gw, route: str, n: int, headers=None, **body) -> list[str]:
    with httpx.Client(timeout=10) as http:
        out = []
        for i in range(n):
            h = headers(i) if callable(headers) else headers
            r = http.post(gw.url + "/chat/completions", json=chat_body(route, **body), headers=h)
            assert r.status_code == 200, r.text
            out.append(r.headers["x-modelfleet-deployment"])
        return out


def test_a_weighted_split_is_within_statistical_tolerance(fleet):
    n = 1000
    share = served_by(fleet, "ab", n).count("a") / n
    sigma = math.sqrt(0.8 * 0.2 / n)
    assert abs(share - 0.8) < 4.5 * sigma, share  # a false alarm about once in 150,000 runs


def test_sticky_sessions_keep_their_variant(fleet):
    sessions = [f"session-{i}" for i in range(200)]
    first = {}
    for rnd in range(3):
        got = served_by(fleet, "sticky", len(sessions), headers=lambda i: {"X-Session-ID": sessions[i]})
        for s, dep in zip(sessions, got, strict=True):
            assert first.setdefault(s, dep) == dep, f"{s} moved from {first[s]} to {dep} in round {rnd}"
    share = list(first.values()).count("a") / len(sessions)
    assert abs(share - 0.8) < 4.5 * math.sqrt(0.16 / len(sessions))


def test_sticky_by_the_user_field(fleet):
    for user in ("alice", "bob", "carol"):
        assert len(set(served_by(fleet, "by-user", 10, user=user))) == 1


def test_usage_and_metrics_name_the_serving_deployment(fleet, http):
    served_by(fleet, "ab", 20)

    def rows() -> list[dict]:
        return http.get(fleet.url + "/usage", params={"by": "route,deployment,variant"}).json()["data"]

    eventually(lambda: sum(r["requests"] for r in rows() if r["route"] == "ab") >= 20, 5, "one ledger flush")
    ab = {r["deployment"] for r in rows() if r["route"] == "ab"}
    assert ab == {"a", "b"} and all(r["variant"] == r["deployment"] for r in rows() if r["route"] == "ab")
    metrics = http.get(fleet.base + "/metrics").text
    assert 'modelfleet_requests_total{deployment="b",route="ab",status="200",team="-",variant="b"}' in metrics


def test_strict_mode_fails_fast_naming_the_deployment(fleet):
    client = openai.OpenAI(base_url=fleet.url, api_key="x", max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="strict", messages=[{"role": "user", "content": "hi"}])
    assert time.monotonic() - started < 1.0
    assert err.value.status_code == 503
    message = err.value.body["message"]
    assert "route 'strict' is strict (fallbacks: none)" in message and "deployment 'down'" in message


def test_a_route_falls_back_when_its_deployment_is_down(fleet):
    assert set(served_by(fleet, "safe", 5)) == {"ok"}


def test_a_5xx_is_retried_on_another_replica_and_the_replica_is_ejected(fleet, http):
    assert set(served_by(fleet, "mixed", 20)) == {"mixed"}  # every request answered 200
    ready = http.get(fleet.base + "/readyz").json()
    out = {r["replica"]: r["reason"] for r in ready["not_ready"].get("mixed", [])}
    assert "mixed-0" in out and out["mixed-0"].startswith("ejected after 3 failed requests in a row")


def test_engine_metrics_steer_requests_to_the_less_loaded_replica(fleet, http):
    loaded = served_by(fleet, "loaded", 40)
    assert loaded.count("loaded") == 40
    # Which replica served is in the access log's replica column; read it from the metrics instead.
    metrics = http.get(fleet.base + "/metrics").text
    assert 'modelfleet_replica_requests_total{deployment="loaded",replica="loaded-1"} 40.0' in metrics
    served_by(fleet, "unknown", 20)
    metrics = http.get(fleet.base + "/metrics").text
    # A replica whose load is unknown (no metrics) never wins over one with a fresh reading.
    assert 'modelfleet_replica_requests_total{deployment="unknown",replica="unknown-1"} 20.0' in metrics


def test_killing_a_replica_under_load_fails_no_request(tmp_path, start):
    ups = [start(Upstream, "--delay", "0.02"), start(Upstream, "--delay", "0.02")]
    path = write_fleet(
        tmp_path,
        f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments:
  pair: {{kind: openai, urls: ["{ups[0].url}", "{ups[1].url}"]}}
routes:
  chat: {{deployments: [pair], timeout: 10s}}
""",
    )
    gw = start(Gateway, path)
    stop = threading.Event()
    results: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=15) as http:
            while not stop.is_set():
                results.append(http.post(gw.url + "/chat/completions", json=chat_body()).status_code)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        workers = [pool.submit(client) for _ in range(8)]
        time.sleep(1.0)
        ups[1].proc.send_signal(signal.SIGKILL)
        time.sleep(1.5)
        stop.set()
        for w in workers:
            w.result()
    failed = [s for s in results if s != 200]
    assert len(results) > 100 and not failed, f"{len(failed)} of {len(results)} failed: {set(failed)}"
    ready = httpx.get(gw.base + "/readyz").json()
    assert [r["replica"] for r in ready["not_ready"]["pair"]] == ["pair-1"]
