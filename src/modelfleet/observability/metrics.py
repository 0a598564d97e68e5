"""Prometheus metrics. Labels use the fleet's vocabulary (route, deployment, team, variant, replica,
status) and only take values from the fleet file, HTTP status codes or error codes, so their number
stays bounded: never a key, a user, a session or a prompt. `team` is "-" in open mode; `variant` is
the deployment the route's weights picked (the A/B arm), `deployment` the one that answered.

The hot path only touches plain Python numbers (the gateway is one asyncio thread, so no locks);
prometheus_client turns them into the exposition format when /metrics is scraped.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib.metadata
import os
import platform
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
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5, 1)
TPS_BUCKETS = (1, 2.5, 5, 10, 20, 30, 50, 75, 100, 150, 250, 500, 1000)
Key = tuple[str, str, str, str]  # route, deployment, team, variant

# Counted where they happen (routing, the gate, the registry), as {labels: n}; exported and merged here.
TALLIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "retries": ("modelfleet_retries", "Attempts retried on another replica of the same deployment, by reason.",
                ("route", "deployment", "reason")),
    "failovers": ("modelfleet_failovers", "Requests that moved on to another deployment, by reason.",
                  ("route", "from_deployment", "to_deployment", "reason")),
    "rate_limited": ("modelfleet_rate_limited", "Requests refused with 429, by team and the limit reached.",
                     ("team", "limit")),
    "ejections": ("modelfleet_replica_ejections", "Replicas taken out after failed requests (passive health).",
                  ("deployment", "replica")),
    "readmissions": ("modelfleet_replica_readmissions", "Ejected replicas let back in by their health check.",
                     ("deployment", "replica")),
}  # fmt: skip
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
    """Everything counted for one (route, deployment, team, variant)."""

    __slots__ = ("inflight", "latency", "output_tokens", "prompt_tokens", "statuses", "tpot", "tps", "ttft")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.tps = Histogram(TPS_BUCKETS)
        self.prompt_tokens = 0
        self.output_tokens = 0
        self.inflight = 0

    def snapshot(self) -> dict:
        return {
            "statuses": self.statuses, "prompt": self.prompt_tokens, "output": self.output_tokens,
            "inflight": self.inflight,
            **{n: [h.counts, h.sum, h.count] for n, h in (("latency", self.latency), ("ttft", self.ttft),
                                                          ("tpot", self.tpot), ("tps", self.tps))},
        }  # fmt: skip

    def add(self, snap: dict) -> None:
        for status, n in snap["statuses"].items():
            self.statuses[int(status)] = self.statuses.get(int(status), 0) + n
        self.prompt_tokens += snap["prompt"]
        self.output_tokens += snap["output"]
        self.inflight += snap["inflight"]
        self.latency.add(*snap["latency"])
        self.ttft.add(*snap["ttft"])
        self.tpot.add(*snap["tpot"])
        self.tps.add(*snap["tps"])


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
        self.stats: dict[Key, RouteStats] = {}
        self.tallies: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in TALLIES}
        self._replicas: Callable[[], list[Replica]] = list
        self._queued: Callable[[str], int] = lambda _: 0
        self.wakes: Any = None
        self.state: Any = None  # observability.fleet_state.FleetState: deployments, limits, engines
        self.registry.register(_Exposition(self))

    def api_call(self, path: str, status: int) -> None:
        """A request the proxy does not serve (models, health, admin, unknown paths): counted by path."""
        key = (path, status)
        self.calls[key] = self.calls.get(key, 0) + 1

    def stats_for(self, route: str, deployment: str, team: str, variant: str) -> RouteStats:
        key = (route, deployment, team, variant)
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = RouteStats()
        return s

    def observe(
        self,
        key: Key,
        status: int,
        seconds: float,
        ttft: float | None,
        usage: Usage | None,
    ) -> None:
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = RouteStats()
        s.statuses[status] = s.statuses.get(status, 0) + 1
        s.latency.observe(seconds)
        if ttft is not None:
            s.ttft.observe(ttft)
        if usage is not None:
            s.prompt_tokens += usage.prompt_tokens
            out = usage.completion_tokens
            s.output_tokens += out
            if out > 1 and status == 200 and ttft is not None:
                # vLLM's TPOT: the decode time after the first token, per further token. Only a stream
                # shows when the first token came; a JSON answer's time includes the prefill, unknown.
                decode = seconds - ttft
                s.tpot.observe(decode / (out - 1))
                if decode > 0:
                    s.tps.observe(out / decode)

    def tally(self, name: str) -> dict[tuple[str, ...], int]:
        """The {labels: count} dict for one of TALLIES, for the code that counts it."""
        return self.tallies[name]

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
        return {
            "stats": {"\x00".join(k): s.snapshot() for k, s in self.stats.items()},
            "tallies": {n: {"\x00".join(k): v for k, v in t.items()} for n, t in self.tallies.items()},
        }

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

    def merged(self) -> dict[Key, RouteStats]:
        if self.share_dir is None:
            return self.stats
        total: dict[Key, RouteStats] = {}
        for doc in [self._snapshot(), *self._others]:
            for key, snap in doc.get("stats", {}).items():
                route, dep, team, variant = key.split("\x00")
                total.setdefault((route, dep, team, variant), RouteStats()).add(snap)
        return total

    def merged_tallies(self) -> dict[str, dict[tuple[str, ...], int]]:
        if self.share_dir is None:
            return self.tallies
        total: dict[str, dict[tuple[str, ...], int]] = {n: {} for n in TALLIES}
        for doc in [self._snapshot(), *self._others]:
            for name, counts in doc.get("tallies", {}).items():
                into = total.setdefault(name, {})
                for key, n in counts.items():
                    k = tuple(key.split("\x00"))
                    into[k] = into.get(k, 0) + n
        return total


class _Exposition(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator:
        labels = ["route", "deployment", "team", "variant"]
        requests = CounterMetricFamily(
            "modelfleet_requests",
            "Requests answered, by route, deployment (that answered), team, variant (picked) and HTTP status.",
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
        tpot = HistogramMetricFamily(
            "modelfleet_time_per_output_token_seconds",
            "Decode time per output token after the first (vLLM's TPOT); streamed answers of 2+ tokens.",
            labels=labels,
        )
        tps = HistogramMetricFamily(
            "modelfleet_output_tokens_per_second",
            "Output tokens per second of decode, per request (streamed answers of 2+ tokens).",
            labels=labels,
        )
        prompt = CounterMetricFamily(
            "modelfleet_prompt_tokens", "Prompt tokens reported by deployments.", labels=labels
        )
        output = CounterMetricFamily(
            "modelfleet_output_tokens", "Output tokens reported by deployments.", labels=labels
        )
        inflight = GaugeMetricFamily("modelfleet_requests_in_flight", "Requests being served now.", labels=labels)
        for key, s in sorted(self.m.merged().items()):
            k = list(key)
            for status, n in sorted(s.statuses.items()):
                requests.add_metric([*k, str(status)], n)
            latency.add_metric(k, s.latency.cumulative(), s.latency.sum)
            for family, h in ((ttft, s.ttft), (tpot, s.tpot), (tps, s.tps)):
                family.add_metric(k, h.cumulative(), h.sum)
            prompt.add_metric(k, s.prompt_tokens)
            output.add_metric(k, s.output_tokens)
            inflight.add_metric(k, s.inflight)
        yield from (requests, latency, ttft, tpot, tps, prompt, output, inflight)
        yield from self._tallies()
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
        if self.m.state is not None:
            yield from self.m.state.families()
        yield _BUILD_INFO

    def _tallies(self) -> Iterator[CounterMetricFamily]:
        tallies = self.m.merged_tallies()
        # Every replica's ejection counters exist from the start, so rate() and alerts see a 0, not nothing.
        for name in ("ejections", "readmissions"):
            for r in self.m._replicas():
                tallies[name].setdefault((r.deployment, r.name), 0)
        for name, (metric, doc, labels) in TALLIES.items():
            family = CounterMetricFamily(metric, doc, labels=list(labels))
            for key, n in sorted(tallies[name].items()):
                family.add_metric(list(key), n)
            yield family


def _build_info() -> GaugeMetricFamily:
    try:
        version = importlib.metadata.version("modelfleet")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    info = GaugeMetricFamily("modelfleet_build_info", "The modelfleet version serving.", labels=["version", "python"])
    info.add_metric([version, platform.python_version()], 1.0)
    return info


_BUILD_INFO = _build_info()


def _wake_families(wakes: Any) -> tuple[CounterMetricFamily, CounterMetricFamily, HistogramMetricFamily]:
    count = CounterMetricFamily("modelfleet_wakes", "Stopped deployments started by a request.", labels=["deployment"])
    failed = CounterMetricFamily(
        "modelfleet_wake_failures", "Wakes whose start failed (the next request tries again).", labels=["deployment"]
    )
    seconds = HistogramMetricFamily(
        "modelfleet_wake_seconds", "From a wake to the first ready replica.", labels=["deployment"]
    )
    # Deployments that may be woken have their series from the start (0 wakes), so alerts see them.
    for dep in sorted({*wakes.count, *getattr(wakes, "wakeable", ())}):
        count.add_metric([dep], wakes.count.get(dep, 0))
        failed.add_metric([dep], getattr(wakes, "failed", {}).get(dep, 0))
        h = Histogram(WAKE_BUCKETS)
        for v in wakes.seconds.get(dep, ()):
            h.observe(v)
        seconds.add_metric([dep], h.cumulative(), h.sum)
    return (count, failed, seconds)
