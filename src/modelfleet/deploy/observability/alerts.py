"""Prometheus alert rules on what the gateway exports (observability/metrics.py): the one source for
`modelfleet deploy observability` (prometheus/alerts.yaml) and the Kubernetes PrometheusRule.

Each alert also names a `probe`: its expression without the threshold, which must return series on a
gateway under traffic (tests/test_observability_prometheus.py checks it against a real Prometheus), so a
renamed metric cannot leave an alert silently watching nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    p95_latency_seconds: float = 30.0
    errors_per_minute: int = 10
    slow_wake_seconds: float = 120.0
    job: str = "modelfleet"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    probe: str
    wait: str
    severity: str
    summary: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.wait,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary},
        }


def alerts(t: Thresholds = Thresholds()) -> list[Alert]:
    tokens = (
        "(sum by (team) (rate(modelfleet_prompt_tokens_total[1h])) + "
        "sum by (team) (rate(modelfleet_output_tokens_total[1h]))) * 86400"
    )
    # A month at the last 6 hours' pace: a budget per month is burnt by a steady rate, not by one busy hour.
    month = (
        "(sum by (team) (rate(modelfleet_prompt_tokens_total[6h])) + "
        "sum by (team) (rate(modelfleet_output_tokens_total[6h]))) * 86400 * 30"
    )
    p95 = "histogram_quantile(0.95, sum by (le, route) (rate(modelfleet_request_duration_seconds_bucket[5m])))"
    ttft = "histogram_quantile(0.95, sum by (le, route) (rate(modelfleet_time_to_first_token_seconds_bucket[5m])))"
    wake = "histogram_quantile(0.9, sum by (le, deployment) (rate(modelfleet_wake_seconds_bucket[1h])))"
    errors_1m = 'sum by (route) (increase(modelfleet_requests_total{status=~"5.."}[1m]))'
    return [
        Alert("ModelfleetGatewayDown", f'up{{job="{t.job}"}} == 0', f'up{{job="{t.job}"}}', "5m", "critical",
              "A gateway ({{ $labels.instance }}) has not answered a scrape for 5 minutes."),
        Alert("ModelfleetHighErrorRate",
              'sum by (route) (rate(modelfleet_requests_total{status=~"5.."}[5m]))'
              " / sum by (route) (rate(modelfleet_requests_total[5m])) > 0.05",
              "sum by (route) (rate(modelfleet_requests_total[5m]))", "10m", "warning",
              "Route {{ $labels.route }} answers more than 5% of requests with a 5xx."),
        Alert("ModelfleetTooMany5xx", f"{errors_1m} > {t.errors_per_minute}", errors_1m, "2m", "critical",
              f"Route {{{{ $labels.route }}}} answers more than {t.errors_per_minute} requests a minute with a 5xx."),
        Alert("ModelfleetDeploymentUnavailable",
              "max by (deployment) (modelfleet_replica_ready) == 0"
              ' and on (deployment) sum by (deployment) (rate(modelfleet_requests_total{status="503"}[5m])) > 0',
              "max by (deployment) (modelfleet_replica_ready)", "5m", "critical",
              "Deployment {{ $labels.deployment }} has no ready replica and requests get 503s."),
        Alert("ModelfleetReplicaUnhealthy",
              'max by (deployment, replica) (modelfleet_replica_state{state="unhealthy"}) == 1',
              'max by (deployment, replica) (modelfleet_replica_state{state="unhealthy"})', "5m", "warning",
              "Replica {{ $labels.replica }} of {{ $labels.deployment }} has been unhealthy for 5 minutes."),
        Alert("ModelfleetReplicaEjections",
              "sum by (deployment) (increase(modelfleet_replica_ejections_total[15m])) > 3",
              "sum by (deployment) (increase(modelfleet_replica_ejections_total[15m]))", "0m", "warning",
              "Replicas of {{ $labels.deployment }} were ejected more than 3 times in 15 minutes (flapping)."),
        Alert("ModelfleetQueueBacklog", "max by (deployment) (modelfleet_queue_depth) > 10",
              "max by (deployment) (modelfleet_queue_depth)", "5m", "warning",
              "More than 10 requests wait for a replica of {{ $labels.deployment }}: add replicas."),
        Alert("ModelfleetHighLatency", f"{p95} > {t.p95_latency_seconds:g}", p95, "10m", "warning",
              f"p95 latency on route {{{{ $labels.route }}}} is above {t.p95_latency_seconds:g}s."),
        Alert("ModelfleetSlowFirstToken", f"{ttft} > 5", ttft, "10m", "warning",
              "p95 time to first token on route {{ $labels.route }} is above 5s."),
        Alert("ModelfleetBudgetBurn",
              f'{tokens} > on (team) max by (team) (modelfleet_team_limit{{limit="tokens_per_day"}})',
              tokens, "15m", "warning",
              "Team {{ $labels.team }} uses tokens fast enough to spend its daily budget within a day."),
        Alert("ModelfleetMonthlyBudgetBurn",
              f'{month} > on (team) max by (team) (modelfleet_team_limit{{limit="tokens_per_month"}})',
              month, "15m", "warning",
              "Team {{ $labels.team }} uses tokens fast enough to spend its monthly budget within 30 days."),
        Alert("ModelfleetBudgetExhausted",
              'sum by (team) (increase(modelfleet_rate_limited_total{limit=~"tokens_per_.*"}[10m])) > 0',
              "sum by (team) (increase(modelfleet_rate_limited_total[10m]))", "0m", "warning",
              "Team {{ $labels.team }} reached a token budget: its requests get 429s until it renews."),
        Alert("ModelfleetWakeFailed", "sum by (deployment) (increase(modelfleet_wake_failures_total[15m])) > 0",
              "sum by (deployment) (increase(modelfleet_wake_failures_total[15m]))", "0m", "critical",
              "A request could not wake deployment {{ $labels.deployment }}: its start failed."),
        Alert("ModelfleetSlowWake", f"{wake} > {t.slow_wake_seconds:g}", wake, "0m", "warning",
              f"Waking {{{{ $labels.deployment }}}} takes more than {t.slow_wake_seconds:g}s (p90, last hour)."),
        Alert("ModelfleetDeploymentDown",
              'max by (deployment) (modelfleet_deployment_desired{state="running"}) == 1'
              " and on (deployment) max by (deployment) (modelfleet_deployment_scheduled) == 1"
              ' and on (deployment) max by (deployment) (modelfleet_deployment_observed{state=~"down|stopped"}) == 1',
              "max by (deployment) (modelfleet_deployment_observed)", "10m", "critical",
              "Deployment {{ $labels.deployment }} is down while it should run (inside its schedule)."),
    ]  # fmt: skip


def rule_groups(t: Thresholds = Thresholds()) -> dict[str, Any]:
    """The rules file body: {"groups": [...]}, as Prometheus and the PrometheusRule's spec both take it."""
    return {"groups": [{"name": "modelfleet", "rules": [a.rule() for a in alerts(t)]}]}
