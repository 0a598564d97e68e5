"""Prometheus Operator objects: a ServiceMonitor for the gateway's /metrics, and alerts on what it exports
(observability/metrics.py: modelfleet_requests_total, modelfleet_queue_depth, modelfleet_replica_ready,
modelfleet_time_to_first_token_seconds)."""

from __future__ import annotations

from typing import Any

from modelfleet.deploy.k8s.options import GATEWAY, Options, labels, selector


def _alert(name: str, expr: str, wait: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": wait,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


ALERTS = [
    _alert(
        "ModelfleetGatewayDown",
        f'up{{job="{GATEWAY}"}} == 0',
        "5m",
        "critical",
        "A gateway pod ({{ $labels.pod }}) has not answered a scrape for 5 minutes.",
    ),
    _alert(
        "ModelfleetHighErrorRate",
        'sum by (route) (rate(modelfleet_requests_total{status=~"5.."}[5m]))'
        " / sum by (route) (rate(modelfleet_requests_total[5m])) > 0.05",
        "10m",
        "warning",
        "Route {{ $labels.route }} answers more than 5% of requests with a 5xx.",
    ),
    _alert(
        "ModelfleetDeploymentUnavailable",
        "max by (deployment) (modelfleet_replica_ready) == 0"
        ' and on (deployment) sum by (deployment) (rate(modelfleet_requests_total{status="503"}[5m])) > 0',
        "5m",
        "critical",
        "Deployment {{ $labels.deployment }} has no ready replica and requests get 503s.",
    ),
    _alert(
        "ModelfleetQueueBacklog",
        "max by (deployment) (modelfleet_queue_depth) > 10",
        "5m",
        "warning",
        "More than 10 requests wait for a replica of {{ $labels.deployment }}: add replicas.",
    ),
    _alert(
        "ModelfleetSlowFirstToken",
        "histogram_quantile(0.95, sum by (le, route) (rate(modelfleet_time_to_first_token_seconds_bucket[5m]))) > 5",
        "10m",
        "warning",
        "p95 time to first token on route {{ $labels.route }} is above 5s.",
    ),
]


def objects(opts: Options) -> list[dict[str, Any]]:
    meta = {"name": GATEWAY, "namespace": opts.namespace, "labels": labels(GATEWAY, "gateway")}
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector(GATEWAY)},
            "namespaceSelector": {"matchNames": [opts.namespace]},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        },
    }
    rules = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta,
        "spec": {"groups": [{"name": "modelfleet", "rules": ALERTS}]},
    }
    return [monitor, rules]
