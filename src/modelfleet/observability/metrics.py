"""Prometheus metrics. Labels use the fleet's vocabulary (route, deployment, replica, status) and
only take values from the fleet file or HTTP status codes, so their number stays bounded.

The hot path only touches plain Python numbers (the gateway is one asyncio thread, so no locks);
prometheus_client turns them into the exposition format when /metrics is scraped.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from modelfleet.values import Replica, Usage

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAKE_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def add(self, counts: list[int], total: float, count: int) -> None:
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.sum += total
        self.count += count

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


class RouteStats:
    """Everything counted for one (route, deployment) pair."""

    __slots__ = ("inflight", "latency", "output_tokens", "prompt_tokens", "statuses", "ttft")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.inflight = 0

    def snapshot(self) -> dict:
        h, t = self.latency, self.ttft
        return {
            "statuses": self.statuses, "prompt": self.prompt_tokens, "output": self.output_tokens,
            "inflight": self.inflight, "latency": [h.counts, h.sum, h.count], "ttft": [t.counts, t.sum, t.count],
        }  # fmt: skip

    def add(self, snap: dict) -> None:
        for status, n in snap["statuses"].items():
            self.statuses[int(status)] = self.statuses.get(int(status), 0) + n
        self.prompt_tokens += snap["prompt"]
        self.output_tokens += snap["output"]
        self.inflight += snap["inflight"]
        self.latency.add(*snap["latency"])
        self.ttft.add(*snap["ttft"])


class GatewayMetrics:
    """Counts for this process; with `share_dir` (several gateway workers), also what the others published.

    Each worker writes a snapshot of its counts to `share_dir/metrics-<pid>.json` every second; whichever
    worker answers a scrape adds the others' snapshots to its own live counts.
    """

    def __init__(self, share_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.share_dir = share_dir
        self._others: list[dict] = []  # the other workers' last snapshots, read at each scrape
        self.calls: dict[tuple[str, int], int] = {}  # (path, status) of requests outside the proxy
        self.stats: dict[tuple[str, str], RouteStats] = {}
        self._replicas: Callable[[], list[Replica]] = list
        self._queued: Callable[[str], int] = lambda _: 0
        self.wakes: Any = None
        self.registry.register(_Exposition(self))

    def api_call(self, path: str, status: int) -> None:
        """A request the proxy does not serve (models, health, admin, unknown paths): counted by path."""
        key = (path, status)
        self.calls[key] = self.calls.get(key, 0) + 1

    def stats_for(self, route: str, deployment: str) -> RouteStats:
        key = (route, deployment)
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = RouteStats()
        return s

    def observe(
        self,
        route: str,
        deployment: str,
        status: int,
        seconds: float,
        ttft: float | None,
        usage: Usage | None,
    ) -> None:
        s = self.stats_for(route, deployment)
        s.statuses[status] = s.statuses.get(status, 0) + 1
        s.latency.observe(seconds)
        if ttft is not None:
            s.ttft.observe(ttft)
        if usage is not None:
            s.prompt_tokens += usage.prompt_tokens
            s.output_tokens += usage.completion_tokens

    def watch_replicas(self, replicas: Callable[[], list[Replica]], queued: Callable[[str], int]) -> None:
        """Replica readiness and queue depth are read from live state at scrape time."""
        self._replicas = replicas
        self._queued = queued

    def watch_wakes(self, wakes: Any) -> None:
        """Wake counts and latencies (control.deployments.WakeStats), read at scrape time."""
        self.wakes = wakes

    async def render(self) -> bytes:
        # The other workers' snapshots are files: read off the event loop, merged on it.
        if self.share_dir is not None:
            self._others = await asyncio.to_thread(self._read_others)
        return generate_latest(self.registry)

    def _snapshot(self) -> dict[str, dict]:
        return {f"{r}\x00{d}": s.snapshot() for (r, d), s in self.stats.items()}

    async def publish(self) -> None:
        if self.share_dir is None:
            return
        doc = orjson.dumps(self._snapshot(), option=orjson.OPT_NON_STR_KEYS)  # taken on the loop
        await asyncio.to_thread(self._write, doc)

    def _write(self, doc: bytes) -> None:
        assert self.share_dir is not None
        tmp = self.share_dir / f".metrics-{os.getpid()}.tmp"
        tmp.write_bytes(doc)
        tmp.replace(self.share_dir / f"metrics-{os.getpid()}.json")

    def _read_others(self) -> list[dict]:
        assert self.share_dir is not None
        docs = []
        for path in self.share_dir.glob("metrics-*.json"):
            if path.stem != f"metrics-{os.getpid()}":
                try:
                    docs.append(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError):
                    continue  # a worker mid-write; its counts arrive with the next scrape
        return docs

    def merged(self) -> dict[tuple[str, str], RouteStats]:
        if self.share_dir is None:
            return self.stats
        total: dict[tuple[str, str], RouteStats] = {}
        for doc in [self._snapshot(), *self._others]:
            for key, snap in doc.items():
                route, dep = key.split("\x00")
                total.setdefault((route, dep), RouteStats()).add(snap)
        return total


class _Exposition(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator:
        labels = ["route", "deployment"]
        requests = CounterMetricFamily(
            "modelfleet_requests",
            "Requests answered, by route, deployment and HTTP status.",
            labels=[*labels, "status"],
        )
        latency = HistogramMetricFamily(
            "modelfleet_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            labels=labels,
        )
        ttft = HistogramMetricFamily(
            "modelfleet_time_to_first_token_seconds",
            "Time to the first content chunk of a stream.",
            labels=labels,
        )
        prompt = CounterMetricFamily(
            "modelfleet_prompt_tokens", "Prompt tokens reported by deployments.", labels=labels
        )
        output = CounterMetricFamily(
            "modelfleet_output_tokens", "Output tokens reported by deployments.", labels=labels
        )
        inflight = GaugeMetricFamily("modelfleet_requests_in_flight", "Requests being served now.", labels=labels)
        for (route, dep), s in sorted(self.m.merged().items()):
            for status, n in sorted(s.statuses.items()):
                requests.add_metric([route, dep, str(status)], n)
            latency.add_metric([route, dep], s.latency.cumulative(), s.latency.sum)
            if s.ttft.count:
                ttft.add_metric([route, dep], s.ttft.cumulative(), s.ttft.sum)
            prompt.add_metric([route, dep], s.prompt_tokens)
            output.add_metric([route, dep], s.output_tokens)
            inflight.add_metric([route, dep], s.inflight)
        yield from (requests, latency, ttft, prompt, output, inflight)
        calls = CounterMetricFamily(
            "modelfleet_api_requests", "Requests outside the proxy: models, health, admin, other paths (per process).",
            labels=["path", "status"],
        )  # fmt: skip
        for (path, status), n in sorted(self.m.calls.items()):
            calls.add_metric([path, str(status)], n)
        yield calls

        ready = GaugeMetricFamily(
            "modelfleet_replica_ready",
            "1 when the replica is ready to serve.",
            labels=["deployment", "replica"],
        )
        busy = GaugeMetricFamily(
            "modelfleet_replica_in_flight", "Requests on the replica now.", labels=["deployment", "replica"]
        )
        queue = GaugeMetricFamily(
            "modelfleet_queue_depth", "Requests waiting for a free replica.", labels=["deployment"]
        )
        handed = CounterMetricFamily(
            "modelfleet_replica_requests", "Requests sent to the replica (retries count again).",
            labels=["deployment", "replica"],
        )  # fmt: skip
        failed = CounterMetricFamily(
            "modelfleet_replica_failures", "Requests that failed on the replica (before or after their first byte).",
            labels=["deployment", "replica"],
        )  # fmt: skip
        load = GaugeMetricFamily(
            "modelfleet_replica_engine_load",
            "The engine's own load as last scraped (vLLM: requests waiting + KV-cache use); only scraped replicas.",
            labels=["deployment", "replica"],
        )
        deployments = set()
        for r in self.m._replicas():
            if r.load_at:
                load.add_metric([r.deployment, r.name], r.load)
            ready.add_metric([r.deployment, r.name], 1.0 if r.ready else 0.0)
            busy.add_metric([r.deployment, r.name], float(r.traffic.inflight))
            handed.add_metric([r.deployment, r.name], float(r.traffic.requests))
            failed.add_metric([r.deployment, r.name], float(r.traffic.failed))
            deployments.add(r.deployment)
        for d in sorted(deployments):
            queue.add_metric([d], float(self.m._queued(d)))
        yield from (ready, busy, queue, handed, failed, load)
        if self.m.wakes is not None:
            yield from _wake_families(self.m.wakes)


def _wake_families(wakes: Any) -> tuple[CounterMetricFamily, HistogramMetricFamily]:
    count = CounterMetricFamily("modelfleet_wakes", "Stopped deployments started by a request.", labels=["deployment"])
    seconds = HistogramMetricFamily(
        "modelfleet_wake_seconds", "From a wake to the first ready replica.", labels=["deployment"]
    )
    for dep, n in sorted(wakes.count.items()):
        count.add_metric([dep], n)
    for dep, values in sorted(wakes.seconds.items()):
        h = Histogram(WAKE_BUCKETS)
        for v in values:
            h.observe(v)
        seconds.add_metric([dep], h.cumulative(), h.sum)
    return (count, seconds)
