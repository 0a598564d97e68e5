"""Wake-on-request end to end: the real engine is stopped, a request starts it and is answered."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time

import httpx
import openai
import pytest
from conftest import Gateway, cli, write_fleet

pytestmark = pytest.mark.slow

ADMIN = "admin-key-0123456789abcdef"
HELLO = [{"role": "user", "content": "Say hi."}]


def fleet_text(tmp_path) -> str:
    return f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
auth: {{admin_key: {ADMIN}}}
deployments:
  engine: {{kind: llama-cpp, threads: 1, wake_on_request: true, wake_timeout: 60s}}
  sleepy: {{kind: llama-cpp, threads: 1}}
routes:
  engine: {{deployments: [engine]}}
  sleepy: {{deployments: [sleepy]}}
"""


def deployments(gw, *args: str) -> str:
    return cli("deployments", *args, "--url", gw.base, "--admin-key", ADMIN).stdout


def test_a_stopped_deployment_wakes_on_a_request_and_stays_stopped_across_a_restart(tmp_path, start):
    path = write_fleet(tmp_path, fleet_text(tmp_path))
    gw = start(Gateway, path)
    out = deployments(gw, "stop", "engine")
    assert "engine: stopped after" in out
    deployments(gw, "stop", "sleepy")
    status = json.loads(deployments(gw, "status", "--json"))
    engine = next(d for d in status if d["name"] == "engine")
    assert engine["desired"] == engine["observed"] == "stopped" and engine["reason"] == "stop by the admin API"

    # A deployment without wake_on_request answers at once, and says why.
    refused = httpx.post(gw.url + "/chat/completions", json={"model": "sleepy", "messages": HELLO})
    assert refused.status_code == 503 and "wake_on_request is off" in refused.json()["error"]["message"]

    # The gateway restarts: what it was told survives.
    assert gw.stop() == 0
    gw = start(Gateway, path, wait_ready=False)
    gw.wait_for(r"deployment engine stays stopped: stop by the admin API")

    # Three concurrent requests share one wake, and all are answered.
    client = openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0, timeout=120)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: client.chat.completions.create(
            model="engine", messages=HELLO, max_tokens=4, temperature=0), range(3)))  # fmt: skip
    assert all(r.choices[0].message.content for r in replies)
    assert time.monotonic() - started < 60
    metrics = httpx.get(gw.base + "/metrics").text
    assert 'modelfleet_wakes_total{deployment="engine"} 1.0' in metrics
    assert re.search(r'modelfleet_wake_seconds_count\{deployment="engine"\} 1\.0', metrics)
    assert "deployment engine: woken by a request" in gw.output
