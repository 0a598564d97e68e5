"""Prometheus Operator objects: a ServiceMonitor for the gateway's /metrics, and the alerts on what it
exports (deploy/observability/alerts.py, shared with `modelfleet deploy observability`).

They form a Kustomize Component (components/monitoring), which staging and prod include unless
`--no-monitoring` is given: base and dev apply on a cluster without the operator's CRDs, and any overlay
takes it with one line, `components: [../../components/monitoring]`."""

from __future__ import annotations

from typing import Any

from modelfleet.deploy.k8s.options import GATEWAY, SECRET, Options, labels, selector
from modelfleet.deploy.k8s.source import Source
from modelfleet.deploy.observability.alerts import Thresholds, rule_groups
from modelfleet.errors import ConfigError

# One source of alerts: the same rules `modelfleet deploy observability` writes, with the gateway's job.
ALERTS = rule_groups(Thresholds(job=GATEWAY))["groups"][0]["rules"]


def objects(source: Source, opts: Options) -> list[dict[str, Any]]:
    meta = {"name": GATEWAY, "namespace": opts.namespace, "labels": labels(GATEWAY, "gateway")}
    endpoint: dict[str, Any] = {"port": "http", "path": "/metrics", "interval": "30s"}
    key = source.var("auth", "metrics_key")
    if key is not None:  # Prometheus reads the scrape key from the gateway's own Secret
        endpoint["authorization"] = {"type": "Bearer", "credentials": {"name": SECRET, "key": key}}
    elif opts.monitoring and (source.fleet.teams or source.fleet.auth.admin_key is not None):
        raise ConfigError(
            ["auth.metrics_key: with teams, /metrics needs a key, and the ServiceMonitor takes it from the "
             f"Secret {SECRET}; set `metrics_key: ${{MODELFLEET_METRICS_KEY}}` (or render with --no-monitoring)"],
            file=str(source.path),
        )  # fmt: skip
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector(GATEWAY)},
            "namespaceSelector": {"matchNames": [opts.namespace]},
            "endpoints": [endpoint],
        },
    }
    rules = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta,
        "spec": {"groups": [{"name": "modelfleet", "rules": ALERTS}]},
    }
    return [monitor, rules]


def component() -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component", "resources": ["monitoring.yaml"]}
