"""The fleet's state as gauges, read at scrape time: deployments (desired, observed, schedule), replicas
(state, engine readings) and the teams' limits.

Nothing here is on the request path; every label value comes from the fleet file (deployment, replica,
team and limit names) or from a closed set of states.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from modelfleet.values import Replica, ReplicaState

DESIRED = ("running", "stopped")
OBSERVED = ("running", "degraded", "starting", "stopped", "down")
LIMITS = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month")


class FleetState:
    def __init__(
        self,
        replicas: Callable[[], list[Replica]],
        deployments: Callable[[], dict[str, tuple[str, str, bool]]],
        teams: Callable[[], dict[str, Any]],
        engines: Callable[[], dict[tuple[str, str], tuple[float | None, float | None]]],
    ) -> None:
        self.replicas = replicas  # every replica
        self.deployments = deployments  # name -> (desired, observed, inside its schedule's running window)
        self.teams = teams  # name -> limits (config.schema.Limits)
        self.engines = engines  # (deployment, replica) -> (requests waiting, KV-cache use 0-1)

    def families(self) -> Iterator[GaugeMetricFamily]:
        desired = GaugeMetricFamily(
            "modelfleet_deployment_desired",
            "1 for the state the deployment should be in.",
            labels=["deployment", "state"],
        )
        observed = GaugeMetricFamily(
            "modelfleet_deployment_observed", "1 for the state its replicas show.", labels=["deployment", "state"]
        )
        scheduled = GaugeMetricFamily(
            "modelfleet_deployment_scheduled",
            "1 when the deployment's schedule says it runs now (or it has no schedule).",
            labels=["deployment"],
        )
        for name, (want, seen, inside) in sorted(self.deployments().items()):
            for s in DESIRED:
                desired.add_metric([name, s], 1.0 if s == want else 0.0)
            for s in OBSERVED:
                observed.add_metric([name, s], 1.0 if s == seen else 0.0)
            scheduled.add_metric([name], 1.0 if inside else 0.0)
        yield from (desired, observed, scheduled)

        state = GaugeMetricFamily(
            "modelfleet_replica_state", "1 for the replica's state.", labels=["deployment", "replica", "state"]
        )
        for r in self.replicas():
            for s in ReplicaState:
                state.add_metric([r.deployment, r.name, s.value], 1.0 if r.state is s else 0.0)
        yield state

        waiting = GaugeMetricFamily(
            "modelfleet_replica_engine_queue_depth",
            "Requests waiting inside the engine (vllm:num_requests_waiting) as last scraped.",
            labels=["deployment", "replica"],
        )
        kv = GaugeMetricFamily(
            "modelfleet_replica_engine_kv_cache_usage",
            "The engine's KV-cache use, 0-1 (vllm:kv_cache_usage_perc) as last scraped.",
            labels=["deployment", "replica"],
        )
        for (dep, rep), (w, k) in sorted(self.engines().items()):
            if w is not None:
                waiting.add_metric([dep, rep], w)
            if k is not None:
                kv.add_metric([dep, rep], k)
        yield from (waiting, kv)

        limit = GaugeMetricFamily(
            "modelfleet_team_limit", "A team's configured limit (rpm, tpm, concurrency, token budgets).",
            labels=["team", "limit"],
        )  # fmt: skip
        for team, limits in sorted(self.teams().items()):
            for name in LIMITS:
                value = getattr(limits, name, None)
                if value:
                    limit.add_metric([team, name], float(value))
        yield limit
