"""The Grafana dashboard: fleet overview; latency, TTFT, TPOT and tokens/s per route and team; A/B variants
side by side; deployments and replicas (state, wakes, schedule, engines); limits and budgets.

Every panel queries only what the gateway exports; `$route` and `$team` filter everything, from the
labels Prometheus has seen (bounded by the fleet file).
"""

from __future__ import annotations

from typing import Any

F = 'route=~"$route", team=~"$team"'  # the dashboard's filters, on every request series
V = F + ', variant!=""'  # A/B panels: without requests refused before a variant was picked (401, 404, ...)
R = "$__rate_interval"


def _q(hist: str, q: float, by: str, where: str = F) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({hist}_bucket{{{where}}}[{R}])))"


# (row title, [(panel title, unit, kind, [(expr, legend)])])
ROWS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]] = [
    ("Fleet overview", [
        ("Requests per second", "reqps", "timeseries",
         [(f"sum by (route) (rate(modelfleet_requests_total{{{F}}}[{R}]))", "{{route}}")]),
        ("5xx ratio", "percentunit", "timeseries",
         [(f'sum by (route) (rate(modelfleet_requests_total{{{F}, status=~"5.."}}[{R}])) / '
           f"sum by (route) (rate(modelfleet_requests_total{{{F}}}[{R}]))", "{{route}}")]),
        ("Answers by status", "reqps", "timeseries",
         [(f"sum by (status) (rate(modelfleet_requests_total{{{F}}}[{R}]))", "{{status}}")]),
        ("In flight", "short", "stat", [(f"sum(modelfleet_requests_in_flight{{{F}}})", "in flight")]),
        ("Ready replicas", "short", "stat", [("sum(modelfleet_replica_ready)", "ready")]),
        ("Gateway version", "short", "table", [("modelfleet_build_info", "{{version}}")]),
    ]),
    ("Latency, TTFT, TPOT and tokens/s by route and team", [
        ("p95 latency by route", "s", "timeseries",
         [(_q("modelfleet_request_duration_seconds", 0.95, "route"), "{{route}}")]),
        ("p95 latency by team", "s", "timeseries",
         [(_q("modelfleet_request_duration_seconds", 0.95, "team"), "{{team}}")]),
        ("p95 time to first token by route", "s", "timeseries",
         [(_q("modelfleet_time_to_first_token_seconds", 0.95, "route"), "{{route}}")]),
        ("p95 time per output token by route", "s", "timeseries",
         [(_q("modelfleet_time_per_output_token_seconds", 0.95, "route"), "{{route}}")]),
        ("Median decode tokens/s per request by route", "short", "timeseries",
         [(_q("modelfleet_output_tokens_per_second", 0.5, "route"), "{{route}}")]),
        ("Output tokens/s by team", "short", "timeseries",
         [(f"sum by (team) (rate(modelfleet_output_tokens_total{{{F}}}[{R}]))", "{{team}}")]),
        ("Prompt tokens/s by team", "short", "timeseries",
         [(f"sum by (team) (rate(modelfleet_prompt_tokens_total{{{F}}}[{R}]))", "{{team}}")]),
    ]),
    ("A/B variants side by side", [
        ("Requests per second by variant", "reqps", "timeseries",
         [(f"sum by (route, variant) (rate(modelfleet_requests_total{{{V}}}[{R}]))", "{{route}} / {{variant}}")]),
        ("p95 latency by variant", "s", "timeseries",
         [(_q("modelfleet_request_duration_seconds", 0.95, "route, variant", V), "{{route}} / {{variant}}")]),
        ("p95 TTFT by variant", "s", "timeseries",
         [(_q("modelfleet_time_to_first_token_seconds", 0.95, "route, variant", V), "{{route}} / {{variant}}")]),
        ("p95 TPOT by variant", "s", "timeseries",
         [(_q("modelfleet_time_per_output_token_seconds", 0.95, "route, variant", V), "{{route}} / {{variant}}")]),
        ("Error ratio by variant", "percentunit", "timeseries",
         [(f'sum by (route, variant) (rate(modelfleet_requests_total{{{V}, status!="200"}}[{R}])) / '
           f"sum by (route, variant) (rate(modelfleet_requests_total{{{V}}}[{R}]))", "{{route}} / {{variant}}")]),
    ]),
    ("Deployments and replicas", [
        ("Deployment state (observed)", "short", "table",
         [("max by (deployment, state) (modelfleet_deployment_observed) == 1", "{{deployment}}: {{state}}")]),
        ("Deployment state (desired) and schedule", "short", "table",
         [("max by (deployment, state) (modelfleet_deployment_desired) == 1", "{{deployment}} wants {{state}}"),
          ("max by (deployment) (modelfleet_deployment_scheduled)", "{{deployment}} inside its schedule")]),
        ("Replica state", "short", "table",
         [("max by (deployment, replica, state) (modelfleet_replica_state) == 1", "{{replica}}: {{state}}")]),
        ("Requests per replica", "reqps", "timeseries",
         [(f"sum by (replica) (rate(modelfleet_replica_requests_total[{R}]))", "{{replica}}")]),
        ("Queue depth (gateway)", "short", "timeseries",
         [("max by (deployment) (modelfleet_queue_depth)", "{{deployment}}")]),
        ("Engine queue depth", "short", "timeseries",
         [("max by (replica) (modelfleet_replica_engine_queue_depth)", "{{replica}}")]),
        ("Engine KV-cache use", "percentunit", "timeseries",
         [("max by (replica) (modelfleet_replica_engine_kv_cache_usage)", "{{replica}}")]),
        ("Retries and failovers", "short", "timeseries",
         [(f"sum by (deployment, reason) (increase(modelfleet_retries_total[{R}]))", "retry {{deployment}} {{reason}}"),
          (f"sum by (from_deployment, to_deployment, reason) (increase(modelfleet_failovers_total[{R}]))",
           "{{from_deployment}} -> {{to_deployment}} ({{reason}})")]),
        ("Ejections and re-admissions", "short", "timeseries",
         [(f"sum by (replica) (increase(modelfleet_replica_ejections_total[{R}]))", "ejected {{replica}}"),
          (f"sum by (replica) (increase(modelfleet_replica_readmissions_total[{R}]))", "back {{replica}}")]),
        ("Wakes", "short", "timeseries",
         [(f"sum by (deployment) (increase(modelfleet_wakes_total[{R}]))", "woken {{deployment}}"),
          (f"sum by (deployment) (increase(modelfleet_wake_failures_total[{R}]))", "failed {{deployment}}")]),
        ("p90 wake time", "s", "timeseries",
         [("histogram_quantile(0.9, sum by (le, deployment) (rate(modelfleet_wake_seconds_bucket[1h])))",
           "{{deployment}}")]),
    ]),
    ("Limits and budgets", [
        ("429s by team and limit", "reqps", "timeseries",
         [(f'sum by (team, limit) (rate(modelfleet_rate_limited_total{{team=~"$team"}}[{R}]))', "{{team}} {{limit}}")]),
        ("Tokens today by team", "short", "timeseries",
         [(f"sum by (team) (increase(modelfleet_prompt_tokens_total{{{F}}}[1d])) + "
           f"sum by (team) (increase(modelfleet_output_tokens_total{{{F}}}[1d]))", "{{team}}")]),
        ("Daily budget used", "percentunit", "timeseries",
         [(f"(sum by (team) (increase(modelfleet_prompt_tokens_total{{{F}}}[1d])) + "
           f"sum by (team) (increase(modelfleet_output_tokens_total{{{F}}}[1d]))) / on (team) "
           'max by (team) (modelfleet_team_limit{limit="tokens_per_day"})', "{{team}}")]),
        ("Team limits", "short", "table", [('max by (team, limit) (modelfleet_team_limit{team=~"$team"})',
                                             "{{team}} {{limit}}")]),
    ]),
]  # fmt: skip


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every panel: what the tests evaluate against a real Prometheus."""
    return [(title, expr) for _, panels in ROWS for title, _, _, targets in panels for expr, _ in targets]


def dashboard(title: str) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    pid = 1
    for row, items in ROWS:
        panels.append({"id": pid, "type": "row", "title": row, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})  # fmt: skip
        pid += 1
        y += 1
        for i, (name, unit, kind, targets) in enumerate(items):
            w = 8
            panels.append({
                "id": pid, "type": kind, "title": name,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"x": (i % 3) * w, "y": y + (i // 3) * 8, "w": w, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(65 + j), "expr": expr, "legendFormat": legend,
                     "instant": kind in ("table", "stat"), "range": kind == "timeseries",
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for j, (expr, legend) in enumerate(targets)
                ],
            })  # fmt: skip
            pid += 1
        y += ((len(items) + 2) // 3) * 8

    def variable(name: str, label: str) -> dict[str, Any]:
        return {
            "name": name, "label": label, "type": "query", "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"text": "All", "value": "$__all"}, "refresh": 2,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": f"label_values(modelfleet_requests_total, {name})", "refId": name},
            "definition": f"label_values(modelfleet_requests_total, {name})",
        }  # fmt: skip

    return {
        "title": title,
        "uid": "modelfleet",
        "tags": ["modelfleet", "llm"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                variable("route", "Route"),
                variable("team", "Team"),
            ]
        },
        "panels": panels,
    }
