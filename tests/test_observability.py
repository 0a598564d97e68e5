"""`modelfleet deploy observability` (files, promtool, one source of alerts) and the JSON access log."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.conftest import PY, Gateway, Upstream, _binary, _missing, chat_body, cli, eventually, write_fleet

DATA = Path(__file__).parent / "data"
FLEET = """
teams:
  alpha: {keys: ['${ALPHA_KEY}'], limits: {tokens_per_day: 1000000}}
deployments:
  chat-a: {kind: openai, urls: ['http://10.0.0.1:8000/v1'], api_key: '${UPSTREAM_KEY}'}
  chat-b: {kind: openai, urls: ['http://10.0.0.2:8000/v1'], wake_on_request: true, wake_timeout: 5m}
routes:
  chat: {deployments: {chat-a: 90, chat-b: 10}}
"""
SECRET = "sk-live-do-not-render-0123456789"


def render(tmp_path: Path, *extra: str, env: dict | None = None) -> Path:
    fleet = write_fleet(tmp_path, FLEET)
    out = tmp_path / "obs"
    done = cli("deploy", "observability", "-f", str(fleet), "-o", str(out), *extra, env=env)
    assert "wrote 4 files" in done.stdout
    return out


def test_it_writes_a_dashboard_alerts_a_scrape_config_and_a_collector_and_no_secret(tmp_path):
    out = render(tmp_path, env={"ALPHA_KEY": SECRET, "UPSTREAM_KEY": SECRET})
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["grafana/modelfleet.json", "otel-collector.yaml", "prometheus/alerts.yaml",
                     "prometheus/prometheus.yml"]  # fmt: skip
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text()
    board = json.loads((out / "grafana/modelfleet.json").read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Fleet overview", "Latency, TTFT, TPOT and tokens/s by route and team", "A/B variants side by side",
                    "Deployments and replicas", "Limits and budgets"]  # fmt: skip
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "route", "team"]
    rules = yaml.safe_load((out / "prometheus/alerts.yaml").read_text())["groups"][0]["rules"]
    slow = next(r for r in rules if r["alert"] == "ModelfleetSlowWake")
    assert slow["expr"].endswith("> 300")  # the longest wake_timeout of a wakeable deployment
    collector = yaml.safe_load((out / "otel-collector.yaml").read_text())
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]
    assert collector["exporters"]["otlp/tempo"]["endpoint"] == "tempo:4317"
    scrape = yaml.safe_load((out / "prometheus/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:8000"]


def test_options_set_thresholds_and_jaeger(tmp_path):
    out = render(tmp_path, "--p95-latency", "12", "--errors-per-minute", "3", "--traces-to", "jaeger",
                 env={"ALPHA_KEY": "k" * 20})  # fmt: skip
    rules = {r["alert"]: r for r in yaml.safe_load((out / "prometheus/alerts.yaml").read_text())["groups"][0]["rules"]}
    assert rules["ModelfleetHighLatency"]["expr"].endswith("> 12")
    assert rules["ModelfleetTooMany5xx"]["expr"].endswith("> 3")
    collector = yaml.safe_load((out / "otel-collector.yaml").read_text())
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger-collector:4317"


def test_the_alerts_pass_promtool_and_each_fires_in_trouble_and_stays_quiet_when_healthy(tmp_path):
    promtool = _binary("promtool")
    if promtool is None:
        _missing("promtool is not installed (.ci/run installs it: apt-get install prometheus)")
    out = render(tmp_path, "--slow-wake", "120", env={"ALPHA_KEY": "k" * 20})
    rules_dir = out / "prometheus"
    shutil.copy(DATA / "observability_alerts_test.yaml", rules_dir / "alerts_test.yaml")
    (rules_dir / "modelfleet-metrics-key").write_text("the value of auth.metrics_key")  # the fleet has teams
    for args in (["check", "rules", "alerts.yaml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "alerts_test.yaml"]):  # fmt: skip
        done = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=rules_dir)
        assert done.returncode == 0, done.stdout + done.stderr
    # Every alert is tested both ways: it fires on trouble, and is quiet on a healthy fleet.
    names = {r["alert"] for r in yaml.safe_load((rules_dir / "alerts.yaml").read_text())["groups"][0]["rules"]}
    trouble, healthy = yaml.safe_load((DATA / "observability_alerts_test.yaml").read_text())["tests"]
    assert {t["alertname"] for t in trouble["alert_rule_test"] if t["exp_alerts"]} == names
    assert {t["alertname"] for t in healthy["alert_rule_test"] if t["exp_alerts"] == []} == names


def test_the_kubernetes_prometheus_rule_carries_the_same_alerts():
    code = (
        "from modelfleet.deploy.k8s.monitoring import ALERTS\n"
        "from modelfleet.deploy.observability import alerts\n"
        "print(sorted(a['alert'] for a in ALERTS) == sorted(a.name for a in alerts()))"
    )
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_a_bad_fleet_file_is_named_with_exit_2(tmp_path):
    fleet = write_fleet(tmp_path, "deployments: {}\nroutes: {}\n")
    done = cli("deploy", "observability", "-f", str(fleet), "-o", str(tmp_path / "o"), check=False)
    assert done.returncode == 2
    assert "fleet.yaml" in done.stderr


def test_help_teaches_what_is_written():
    done = cli("deploy", "observability", "--help")
    for word in ("grafana/modelfleet.json", "prometheus/alerts.yaml", "otel-collector.yaml", "Example:"):
        assert word in done.stdout
    assert "observability" in cli("deploy", "--help").stdout


def test_the_observability_section_is_checked(tmp_path):
    base = "deployments:\n  d: {kind: openai, urls: ['http://x/v1']}\nroutes:\n  chat: {deployments: [d]}\n"
    for section, expected in (
        ("observability: {log_content: [nope]}", "observability.log_content: unknown route 'nope'"),
        ("observability: {redact: ['(']}", "is not a regular expression"),
        ("observability: {otlp_endpoint: 'collector:4318'}", "otlp_endpoint"),
    ):
        fleet = write_fleet(tmp_path, base + section + "\n")
        done = cli("config", "check", "-f", str(fleet), check=False)
        assert done.returncode != 0 and expected in done.stderr + done.stdout, done.stderr


def _access_lines(gw: Gateway) -> list[dict]:
    return [json.loads(line) for line in gw.output.splitlines() if '"modelfleet.access"' in line]


def test_the_json_access_log_says_who_what_how_and_where_and_logs_content_only_when_a_route_opts_in(tmp_path, start):
    good = start(Upstream, "--chunks", "4", "--reply", "write to alice@example.com")
    fleet = write_fleet(
        tmp_path,
        "server: {log_format: json}\n"
        "teams:\n  alpha: {keys: ['alpha-key-0123456789abcdef']}\n"
        f"deployments:\n  d: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [d]}\n  audited: {deployments: [d]}\n"
        "observability: {log_content: [audited], redact: ['[\\w.]+@[\\w.]+', 'card \\d+']}\n",
    )
    gw = start(Gateway, fleet)
    auth = {"Authorization": "Bearer alpha-key-0123456789abcdef"}
    secret_prompt = [{"role": "user", "content": "my card 4111 and bob@example.com"}]
    for route in ("chat", "audited"):
        for stream in (False, True):
            r = httpx.post(gw.url + "/chat/completions", headers=auth,
                           json={"model": route, "messages": secret_prompt, "stream": stream})  # fmt: skip
            assert r.status_code == 200
    lines = eventually(lambda: (ls := _access_lines(gw)) and len(ls) == 4 and ls, 10, "4 access lines")
    for line in lines:
        assert line["team"] == "alpha" and line["variant"] == "d" and line["deployment"] == "d"
        assert line["replica"] == "d-0" and line["status"] == 200 and line["attempts"] == 1
        assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0
        assert {"duration_ms", "ttft_ms", "trace_id", "request_id"} <= set(line)
    assert [line["ttft_ms"] is not None for line in lines] == [False, True, False, True]
    plain = [line for line in lines if line["route"] == "chat"]
    assert all("prompt" not in line and "output" not in line for line in plain)
    assert "bob@example.com" not in gw.output and "4111" not in gw.output and "alice@" not in gw.output
    audited = [line for line in lines if line["route"] == "audited"]
    for line in audited:
        assert "my [redacted] and [redacted]" in line["prompt"]
        assert line["output"] == "write to [redacted]"


def test_the_text_access_log_carries_the_same_fields(tmp_path, start):
    good = start(Upstream)
    fleet = write_fleet(
        tmp_path,
        f"deployments:\n  d: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [d]}\n",
    )
    gw = start(Gateway, fleet)
    assert httpx.post(gw.url + "/chat/completions", json=chat_body(stream=True)).status_code == 200
    line = eventually(
        lambda: next((x for x in gw.output.splitlines() if "modelfleet.access" in x and "POST /v1/" in x), None), 10
    )
    for field in ("team=- ", "route=chat", "variant=d", "deployment=d", "replica=d-0", "attempts=1", "ttft="):
        assert field in line, line


def test_every_example_fleet_renders_without_its_secrets_set(tmp_path):
    examples = sorted((Path(__file__).parent.parent / "examples").glob("*/fleet.yaml"))
    assert examples
    for fleet in examples:  # ${VARS} in the fleet file and in its included teams.d/ files are not needed
        done = cli("deploy", "observability", "-f", str(fleet), "-o", str(tmp_path / fleet.parent.name))
        assert "wrote 4 files" in done.stdout


def _sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_time_per_output_token_is_measured_on_streams_only_without_the_prefill(tmp_path, start):
    # Half a second before the first byte (a prefill): a JSON answer cannot tell it from decoding.
    good = start(Upstream, "--delay", "0.5", "--chunks", "4")
    fleet = write_fleet(
        tmp_path,
        f"deployments:\n  d: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [d]}\n",
    )
    gw = start(Gateway, fleet)
    assert httpx.post(gw.url + "/chat/completions", json=chat_body()).status_code == 200
    text = httpx.get(gw.base + "/metrics").text
    assert _sample(text, "modelfleet_requests_total") == 1
    assert _sample(text, "modelfleet_output_tokens_total") > 1
    assert _sample(text, "modelfleet_time_per_output_token_seconds_count") == 0
    assert _sample(text, "modelfleet_output_tokens_per_second_count") == 0
    assert httpx.post(gw.url + "/chat/completions", json=chat_body(stream=True)).status_code == 200
    text = httpx.get(gw.base + "/metrics").text
    assert _sample(text, "modelfleet_time_per_output_token_seconds_count") == 1
    assert _sample(text, "modelfleet_time_per_output_token_seconds_sum") < 0.1  # the 0.5 s before it is TTFT
