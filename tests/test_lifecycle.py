"""Serving as an operator sees it: graceful drain on SIGTERM, CORS, JSON logs, bad start-ups."""

from __future__ import annotations

import json
import subprocess
import threading

import httpx
from conftest import PY, Gateway, Upstream, chat_body, eventually, write_fleet


def fleet_for(tmp_path, upstream: Upstream, extra_server: str = "") -> str:
    return write_fleet(
        tmp_path,
        f"""\
server: {{drain_timeout: 10s{extra_server}}}
deployments:
  up: {{kind: openai, urls: ['{upstream.url}']}}
routes:
  chat: {{deployments: [up]}}
""",
    )


def test_sigterm_drains_in_flight_requests(tmp_path, start):
    up = start(Upstream, "--delay", "1.5")
    gw = start(Gateway, fleet_for(tmp_path, up))
    result: list[httpx.Response] = []
    t = threading.Thread(
        target=lambda: result.append(httpx.post(gw.url + "/chat/completions", json=chat_body(), timeout=10))
    )
    t.start()
    eventually(lambda: "modelfleet_requests_in_flight" in (m := httpx.get(gw.base + "/metrics").text)
               and ' 1.0' in m.split("modelfleet_requests_in_flight{", 1)[-1].split("\n", 1)[0],
               5, "the request is waiting on the upstream")  # fmt: skip
    assert gw.stop() == 0
    t.join()
    assert result[0].status_code == 200  # finished, not cut off
    assert "draining in-flight requests" in gw.output and "stopped" in gw.output


def test_cors_preflight_and_headers(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, fleet_for(tmp_path, up, ", cors: {allow_origins: ['http://ui.local']}"))
    pre = httpx.options(
        gw.url + "/chat/completions",
        headers={"Origin": "http://ui.local", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "http://ui.local"
    assert "content-type" in pre.headers["access-control-allow-headers"]
    resp = httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={"Origin": "http://ui.local"})
    assert resp.headers["access-control-allow-origin"] == "http://ui.local"
    other = httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={"Origin": "http://evil.local"})
    assert "access-control-allow-origin" not in other.headers


def test_json_logs_carry_the_request_id(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, fleet_for(tmp_path, up), extra=["--log-format", "json"])
    httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={"X-Request-ID": "json-1"})
    line = gw.wait_for(r'"request_id":"json-1"', 5).string
    doc = json.loads(line)
    assert doc["status"] == 200 and doc["route"] == "chat" and doc["deployment"] == "up"


def test_unreachable_upstream_is_reported_by_readyz(tmp_path, start):
    gw = start(
        Gateway,
        write_fleet(
            tmp_path,
            "deployments:\n  up: {kind: openai, urls: ['http://127.0.0.1:9/v1']}\n"
            "routes:\n  chat: {deployments: [up]}\n",
        ),
        wait_ready=False,
    )
    gw.wait_for("is unhealthy", 10)
    ready = httpx.get(gw.base + "/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False and body["routes"] == {"chat": False}
    assert "connection to 127.0.0.1:9 failed" in body["not_ready"]["up"][0]["reason"]
    resp = httpx.post(gw.url + "/chat/completions", json=chat_body())
    assert resp.status_code == 503 and "has no ready replica" in resp.json()["error"]["message"]


def test_serve_with_a_bad_fleet_exits_2(tmp_path):
    bad = write_fleet(tmp_path, "deployments: {}\nroutes: {}\n")
    out = subprocess.run([PY, "-m", "modelfleet", "serve", "-f", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "config error" in out.stderr and str(bad) in out.stderr


def test_workers_share_the_port_and_the_metrics(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, fleet_for(tmp_path, up, ", workers: 2"))
    gw.wait_for(r"worker \d+ on http://127\.0\.0\.1", 20)
    statuses = [httpx.post(gw.url + "/chat/completions", json=chat_body()).status_code for _ in range(30)]
    assert statuses == [200] * 30
    total = 'modelfleet_requests_total{deployment="up",route="chat",status="200",team="-",variant="up"} 30.0'
    # Whichever process answers the scrape, the totals are the fleet's, once every worker has published.
    eventually(lambda: all(total in httpx.get(gw.base + "/metrics").text for _ in range(4)), 10, "merged totals")
    assert gw.stop() == 0
    assert "stopping 1 worker(s)" in gw.output
