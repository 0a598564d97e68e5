"""`modelfleet deploy observability`: the fleet file in, what watches it out (pure: config -> files).

grafana/modelfleet.json     the dashboard (import it, or provision it from this folder)
prometheus/alerts.yaml      alert rules (the same rules the Kubernetes PrometheusRule carries)
prometheus/prometheus.yml   a scrape config for the gateway that loads the rules
otel-collector.yaml         OTLP in, traces out to Tempo or Jaeger
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from modelfleet.config import Fleet, parse_fleet
from modelfleet.deploy.observability.alerts import Alert, Thresholds, alerts, rule_groups
from modelfleet.deploy.observability.collector import BACKENDS, collector
from modelfleet.deploy.observability.dashboard import dashboard, queries
from modelfleet.deploy.source import _env_or_placeholders
from modelfleet.errors import ConfigError

__all__ = ["BACKENDS", "Alert", "Options", "Thresholds", "alerts", "queries", "read", "render", "rule_groups", "write"]


@dataclass(frozen=True)
class Options:
    p95_latency_seconds: float = 30.0
    errors_per_minute: int = 10
    slow_wake_seconds: float | None = None  # default: the longest wake_timeout among wakeable deployments
    traces_backend: str = "tempo"
    traces_endpoint: str | None = None
    scrape_target: str | None = None  # default: the fleet's server.host:server.port
    scrape_interval: str = "15s"
    job: str = "modelfleet"
    extra_labels: dict[str, str] = field(default_factory=dict)


METRICS_KEY_FILE = "modelfleet-metrics-key"  # beside prometheus.yml; holds auth.metrics_key's value, never rendered


def read(path: Path) -> Fleet:
    """The fleet file, validated; ${VAR}s need not be set (no value is rendered, only names)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the fleet file: {exc.strerror or exc}"], file=str(path)) from exc
    # Included files (teams.d/) may name ${VARS} too: every YAML file beside the fleet file is looked at.
    beside = [p for p in sorted(path.parent.rglob("*.y*ml"))[:1000] if p.is_file() and p != path]
    refs = text + "".join(p.read_text(encoding="utf-8", errors="replace") for p in beside)
    return parse_fleet(text, file=str(path), env=_env_or_placeholders(refs))


def thresholds(fleet: Fleet, opts: Options) -> Thresholds:
    wakes = [d.wake_timeout for d in fleet.deployments.values() if d.wake_on_request]
    slow = opts.slow_wake_seconds if opts.slow_wake_seconds is not None else max(wakes, default=120.0)
    return Thresholds(opts.p95_latency_seconds, opts.errors_per_minute, slow, opts.job)


def render(fleet: Fleet, opts: Options = Options()) -> dict[str, str]:
    target = opts.scrape_target or f"{fleet.server.host}:{fleet.server.port}"
    scrape: dict = {"job_name": opts.job, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
    if fleet.teams or fleet.auth.admin_key is not None or fleet.auth.metrics_key is not None:
        # With teams, /metrics needs auth.metrics_key: Prometheus reads it from a file, never from this one.
        scrape["authorization"] = {"type": "Bearer", "credentials_file": METRICS_KEY_FILE}
    prometheus = {
        "global": {"scrape_interval": opts.scrape_interval, "evaluation_interval": opts.scrape_interval},
        "rule_files": ["alerts.yaml"],
        "scrape_configs": [scrape],
    }
    return {
        "grafana/modelfleet.json": json.dumps(dashboard("modelfleet"), indent=2) + "\n",
        "prometheus/alerts.yaml": _yaml(rule_groups(thresholds(fleet, opts))),
        "prometheus/prometheus.yml": _yaml(prometheus),
        "otel-collector.yaml": _yaml(collector(opts.traces_backend, opts.traces_endpoint)),
    }


def write(files: dict[str, str], out: Path) -> list[Path]:
    written = []
    for rel, content in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def _yaml(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=1000)
