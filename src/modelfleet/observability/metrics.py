"""Prometheus metrics. Labels use the fleet's vocabulary (route, deployment, replica, status) and
only take values from the fleet file or HTTP status codes, so their number stays bounded."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelfleet.types import Replica, Usage

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "modelfleet_requests", "Requests answered, by route, deployment and HTTP status.",
            ["route", "deployment", "status"], registry=r,
        )  # fmt: skip
        self._latency = Histogram(
            "modelfleet_request_duration_seconds", "Time from request to the last byte of the answer.",
            ["route", "deployment"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._ttft = Histogram(
            "modelfleet_time_to_first_token_seconds", "Time to the first content chunk of a stream.",
            ["route", "deployment"], buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self._prompt = Counter(
            "modelfleet_prompt_tokens", "Prompt tokens, as reported by the deployment.",
            ["route", "deployment"], registry=r,
        )  # fmt: skip
        self._output = Counter(
            "modelfleet_output_tokens", "Output (completion) tokens, as reported by the deployment.",
            ["route", "deployment"], registry=r,
        )  # fmt: skip
        self._inflight = Gauge(
            "modelfleet_requests_in_flight", "Requests being served now.", ["route", "deployment"], registry=r
        )
        self._children: dict[tuple, tuple] = {}
        self._counted: dict[tuple[str, str, int], Counter] = {}

    def _for(self, route: str, deployment: str) -> tuple:
        key = (route, deployment)
        c = self._children.get(key)
        if c is None:
            c = (
                self._latency.labels(route, deployment),
                self._ttft.labels(route, deployment),
                self._prompt.labels(route, deployment),
                self._output.labels(route, deployment),
                self._inflight.labels(route, deployment),
            )
            self._children[key] = c
        return c

    def inflight(self, route: str, deployment: str) -> Gauge:
        return self._for(route, deployment)[4]

    def observe(
        self,
        route: str,
        deployment: str,
        status: int,
        seconds: float,
        ttft: float | None,
        usage: Usage | None,
    ) -> None:
        key = (route, deployment, status)
        counter = self._counted.get(key)
        if counter is None:
            counter = self._counted[key] = self._requests.labels(route, deployment, str(status))
        counter.inc()
        latency, ttft_h, prompt, output, _ = self._for(route, deployment)
        latency.observe(seconds)
        if ttft is not None:
            ttft_h.observe(ttft)
        if usage is not None:
            prompt.inc(usage.prompt_tokens)
            output.inc(usage.completion_tokens)

    def watch_replicas(self, replicas: Callable[[], list[Replica]], queued: Callable[[str], int]) -> None:
        """Replica readiness and queue depth are read from live state at scrape time."""
        self.registry.register(_ReplicaCollector(replicas, queued))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ReplicaCollector(Collector):
    def __init__(self, replicas: Callable[[], list[Replica]], queued: Callable[[str], int]) -> None:
        self._replicas = replicas
        self._queued = queued

    def collect(self):  # type: ignore[override]
        ready = GaugeMetricFamily(
            "modelfleet_replica_ready",
            "1 when the replica is ready to serve.",
            labels=["deployment", "replica"],
        )
        inflight = GaugeMetricFamily(
            "modelfleet_replica_in_flight", "Requests on the replica now.", labels=["deployment", "replica"]
        )
        queue = GaugeMetricFamily(
            "modelfleet_queue_depth", "Requests waiting for a free replica.", labels=["deployment"]
        )
        deployments = set()
        for r in self._replicas():
            ready.add_metric([r.deployment, r.name], 1.0 if r.ready else 0.0)
            inflight.add_metric([r.deployment, r.name], float(r.inflight))
            deployments.add(r.deployment)
        for d in sorted(deployments):
            queue.add_metric([d], float(self._queued(d)))
        yield from (ready, inflight, queue)
