"""The shipped dashboard and alerts against a real Prometheus scraping a real gateway under traffic.

Every dashboard panel's query and every alert's expression is evaluated through Prometheus' HTTP API and
must return data; a query naming a metric the gateway does not export fails. Labels stay bounded: 10,000
requests from random users and sessions add no series.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import uuid
from pathlib import Path

import aiohttp
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.deploy.observability import Thresholds, alerts
from tests.conftest import (
    METRICS_KEY,
    PY,
    Gateway,
    Proc,
    Upstream,
    _binary,
    _missing,
    chat_body,
    eventually,
    free_port,
    scrape,
    write_fleet,
)

ALPHA = "alpha-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"
# What a dashboard's variables stand for when every value is selected.
VARIABLES = {"$route": ".*", "$team": ".*", "$__rate_interval": "1m"}


def fleet_text(good: Upstream, bad: Upstream) -> str:
    return (
        f"auth: {{metrics_key: {METRICS_KEY}}}\n"
        "teams:\n"
        f"  alpha: {{keys: ['{ALPHA}'], limits: {{rpm: 100000, tokens_per_day: 100000000}}}}\n"
        f"  beta: {{keys: ['{BETA}'], limits: {{rpm: 3}}}}\n"
        "deployments:\n"
        f"  a: {{kind: openai, urls: ['{good.url}'], model: fake-model, load_metrics: {{interval: 0.25s}}}}\n"
        f"  b: {{kind: openai, urls: ['{good.url}'], model: fake-model, wake_on_request: true}}\n"
        f"  broken: {{kind: openai, urls: ['{bad.url}', '{bad.url}'], model: fake-model, health: {{eject_for: 1s}}}}\n"
        "routes:\n"
        "  chat: {deployments: {a: 50, b: 50}}\n"
        "  flaky: {deployments: [broken], fallbacks: [chat]}\n"
        "  down: {deployments: [broken], fallbacks: none}\n"
    )


def exported(base: str) -> set[str]:
    """The sample names on the gateway's /metrics."""
    text = scrape(base)
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def exported_labels(base: str) -> dict[str, set[str]]:
    """Each sample name on the gateway's /metrics, with the label names it carries (and Prometheus' own)."""
    labels: dict[str, set[str]] = {"up": {"job", "instance"}}
    for family in text_string_to_metric_families(scrape(base)):
        for sample in family.samples:
            labels.setdefault(sample.name, {"job", "instance"}).update(sample.labels)
    return labels


def unknown_metrics(expr: str, names: set[str]) -> list[str]:
    """modelfleet_* metrics an expression names that the gateway does not export."""
    return [m for m in re.findall(r"\bmodelfleet_[a-z0-9_]+", expr) if m not in names]


def unknown_labels(expr: str, labels: dict[str, set[str]], legend: str = "") -> list[str]:
    """Labels an expression (or its legend, or alert summary) uses that its metrics do not carry: a matcher
    on a label its metric lacks, a `by`/`on` over a label none of its metrics has, a {{label}} in a legend.
    (Such a query still returns data, grouped by nothing, so only this catches the typo.)"""
    bad, union = [], set()
    for metric, matchers in re.findall(r"\b(modelfleet_[a-z0-9_]+|up)\b(?:\{([^}]*)\})?", expr):
        union |= labels.get(metric, set())
        for name in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
            if name not in labels.get(metric, set()):
                bad.append(f"{metric} has no label {name!r}")
    for group in re.findall(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        bad += [
            f"no metric here has {name!r}" for name in map(str.strip, group.split(",")) if name and name not in union
        ]
    bad += [f"legend names {name!r}" for name in re.findall(r"\{\{\s*(?:\$labels\.)?(\w+)\s*\}\}", legend)
            if name not in union]  # fmt: skip
    return bad


def panel_targets(board: Path) -> list[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query in the shipped dashboard JSON."""
    panels = json.loads(board.read_text())["panels"]
    return [(p["title"], t["expr"], t.get("legendFormat", "")) for p in panels for t in p.get("targets", ())]


def substitute(expr: str) -> str:
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


class Prometheus(Proc):
    def __init__(self, config: Path, storage: Path, port: int, binary: str):
        argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"]  # fmt: skip
        super().__init__(argv, r"Server is ready to receive web requests", timeout=60)
        self.url = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=30)
        doc = r.json()
        assert doc["status"] == "success", f"{expr}: {doc}"
        return doc["data"]["result"]


def traffic(base: str, stop: threading.Event) -> None:
    """Requests until stopped: rates need a counter that grows while Prometheus scrapes."""
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            _burst(c, base)
            stop.wait(0.3)


def _burst(c: httpx.Client, base: str) -> None:
    if True:
        for i in range(20):
            key = ALPHA if i % 2 else BETA
            c.post(base + "/v1/chat/completions", json=chat_body(stream=i % 3 == 0),
                   headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        # A model no route serves: a 404 with no route and no variant, which the A/B panels leave out.
        c.post(
            base + "/v1/chat/completions", json=chat_body("no-such-route"), headers={"Authorization": f"Bearer {ALPHA}"}
        )
        for _ in range(2):  # failover broken -> chat, 502s from `down`, ejections of broken
            c.post(base + "/v1/chat/completions", json=chat_body("flaky"), headers={"Authorization": f"Bearer {ALPHA}"})
            c.post(base + "/v1/chat/completions", json=chat_body("down"), headers={"Authorization": f"Bearer {ALPHA}"})


@pytest.fixture
def prometheus_binary() -> str:
    binary = _binary("prometheus", "/usr/bin")
    if binary is None:
        _missing("prometheus is not installed (.ci/run installs it: apt-get install prometheus)")
    return binary


def test_every_panel_and_alert_returns_data_from_a_real_prometheus(tmp_path, start, prometheus_binary):
    good = start(Upstream, "--chunks", "8", "--waiting", "2", "--kv-cache", "0.5")
    bad = start(Upstream, "--status", "500")
    fleet = write_fleet(tmp_path, fleet_text(good, bad))
    gw = start(Gateway, fleet)
    # The shipped scrape config and rules, as `modelfleet deploy observability` writes them.
    obs = tmp_path / "obs"
    target = gw.base.removeprefix("http://")
    argv = [
        PY,
        "-m",
        "modelfleet",
        "deploy",
        "observability",
        "-f",
        str(fleet),
        "-o",
        str(obs),
        "--scrape-target",
        target,
    ]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((obs / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (obs / "prometheus" / "prometheus.yml").write_text(yaml.safe_dump(config))
    (obs / "prometheus" / "modelfleet-metrics-key").write_text(METRICS_KEY)  # as the CLI's next steps say
    prom = start(Prometheus, obs / "prometheus" / "prometheus.yml", tmp_path / "tsdb", free_port(), prometheus_binary)

    stop = threading.Event()
    sender = threading.Thread(target=traffic, args=(gw.base, stop), daemon=True)
    sender.start()
    try:
        _judge(prom, gw, obs / "grafana" / "modelfleet.json")
    finally:
        stop.set()
        sender.join(30)


def _judge(prom: Prometheus, gw: Gateway, board: Path) -> None:
    names = exported(gw.base)
    eventually(lambda: prom.query('sum(rate(modelfleet_requests_total{status=~"5.."}[1m])) > 0'), 30, "5xx rates")
    eventually(lambda: prom.query("sum(rate(modelfleet_failovers_total[1m])) > 0"), 30, "failover rates")
    names = exported(gw.base)
    labels = exported_labels(gw.base)
    up = prom.query('up{job="modelfleet"}')
    assert up and up[0]["value"][1] == "1"

    empty, unknown = [], []
    targets = panel_targets(board)
    assert len(targets) >= 30, targets
    for title, expr, legend in targets:
        unknown += [f"panel {title!r}: {m}" for m in unknown_metrics(expr, names)]
        unknown += [f"panel {title!r}: {m}" for m in unknown_labels(expr, labels, legend)]
        if not prom.query(substitute(expr)):
            empty.append(f"panel {title!r}: {expr}")
    for alert in alerts(Thresholds()):
        unknown += [f"alert {alert.name}: {m}" for m in unknown_metrics(alert.expr, names)]
        unknown += [f"alert {alert.name}: {m}" for m in unknown_labels(alert.expr, labels, alert.summary)]
        unknown += [f"alert {alert.name} probe: {m}" for m in unknown_labels(alert.probe, labels)]
        prom.query(alert.expr)  # valid PromQL on live data (quiet or firing)
        if not prom.query(alert.probe):
            empty.append(f"alert {alert.name}: {alert.probe}")
    assert not unknown, "names a metric or label the gateway does not export:\n" + "\n".join(unknown)
    assert not empty, "returned no data:\n" + "\n".join(empty)

    # Prometheus loaded the very same rules file, and judges every rule healthy.
    rules = httpx.get(prom.url + "/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert sorted(r["name"] for r in rules) == sorted(a.name for a in alerts(Thresholds()))
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]

    # The counts behind the new panels are the real ones.
    by_limit = prom.query("sum by (team, limit) (modelfleet_rate_limited_total)")
    assert [(s["metric"]["team"], s["metric"]["limit"]) for s in by_limit] == [("beta", "rpm")]
    failovers = prom.query("sum by (from_deployment, to_deployment) (modelfleet_failovers_total)")
    assert {(s["metric"]["from_deployment"], s["metric"]["to_deployment"]) for s in failovers} <= {
        ("broken", "a"),
        ("broken", "b"),
    } and failovers
    ab = dict((title, expr) for title, expr, _ in targets)["Requests per second by variant"]
    assert {s["metric"].get("variant", "") for s in prom.query(substitute(ab))} == {"a", "b", "broken"}
    assert prom.query('modelfleet_requests_total{route="", status="404"}')  # which it left out
    variants = prom.query('sum by (variant) (modelfleet_requests_total{route="chat"})')
    assert {s["metric"]["variant"] for s in variants} == {"a", "b"}
    kv = prom.query('modelfleet_replica_engine_kv_cache_usage{replica="a-0"}')
    assert kv and float(kv[0]["value"][1]) == 0.5


def test_a_query_naming_a_metric_the_gateway_does_not_export_fails(tmp_path, start):
    good = start(Upstream)
    gw = start(Gateway, write_fleet(tmp_path, fleet_text(good, good)))
    httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {ALPHA}"})
    names = exported(gw.base)
    assert unknown_metrics("sum(rate(modelfleet_requests_total[1m]))", names) == []
    assert unknown_metrics("sum(rate(modelfleet_request_total[1m]))", names) == ["modelfleet_request_total"]
    labels = exported_labels(gw.base)
    good = 'sum by (route, team) (rate(modelfleet_requests_total{status=~"5.."}[1m]))'
    assert unknown_labels(good, labels, "{{route}} {{team}}") == []
    assert unknown_labels("sum by (model) (rate(modelfleet_requests_total[1m]))", labels) == [
        "no metric here has 'model'"
    ]
    assert unknown_labels('modelfleet_team_limit{kind="rpm"}', labels) == ["modelfleet_team_limit has no label 'kind'"]
    assert unknown_labels("modelfleet_queue_depth", labels, "{{ $labels.replica }}") == ["legend names 'replica'"]


async def _flood(url: str, n: int, concurrency: int = 32) -> None:
    async def one(session: aiohttp.ClientSession, i: int) -> None:
        route = "chat" if i % 2 else "sessions"
        body = {**chat_body(route, stream=i % 4 == 0), "user": f"user-{uuid.uuid4().hex}"}
        async with session.post(url, json=body, headers={"X-Session-ID": uuid.uuid4().hex,
                                                         "Authorization": f"Bearer {ALPHA}"}) as r:  # fmt: skip
            assert r.status == 200, await r.text()
            await r.read()

    sem = asyncio.Semaphore(concurrency)

    async def bounded(session: aiohttp.ClientSession, i: int) -> None:
        async with sem:
            await one(session, i)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(bounded(session, i) for i in range(n)))


def test_ten_thousand_requests_from_random_users_and_sessions_add_no_series(tmp_path, start):
    good = start(Upstream, "--chunks", "4")
    fleet = write_fleet(
        tmp_path,
        f"server: {{access_log: false}}\nteams:\n  alpha: {{keys: ['{ALPHA}']}}\n"
        f"deployments:\n  a: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        f"  b: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: {a: 50, b: 50}, sticky: user}\n"
        "  sessions: {deployments: {a: 50, b: 50}, sticky: 'header:X-Session-ID'}\n",
    )
    gw = start(Gateway, fleet)
    url = gw.url + "/chat/completions"
    asyncio.run(_flood(url, 400))  # every route, variant and status seen once
    _series(gw.base)  # and a scrape itself (modelfleet_api_requests_total{path="/metrics"})
    before = {s for s in _series(gw.base)}
    asyncio.run(_flood(url, 10_000))
    after = {s for s in _series(gw.base)}
    assert after == before, sorted(after ^ before)[:10]
    assert len(before) < 400
    text = scrape(gw.base)
    assert "user-" not in text


def _series(base: str) -> list[str]:
    text = scrape(base)
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
