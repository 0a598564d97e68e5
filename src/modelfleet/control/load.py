"""Engine load readings: scrape each replica's Prometheus endpoint for vLLM's queue and KV cache.

    load = vllm:num_requests_waiting + vllm:kv_cache_usage_perc   (older vLLM: vllm:gpu_cache_usage_perc)

A queued request weighs one; a full KV cache weighs like one more queued request. A replica whose
scrape fails keeps its old `load_at`, so the dispatcher soon treats its reading as stale (unknown).
A vLLM /metrics body is ~64 KB and parsing all of it took ~8 ms, every 250 ms per replica, on the
gateway's event loop: only the few lines read here are handed to prometheus_client's parser.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.background import Periodic
from modelfleet.config.schema import LoadMetrics
from modelfleet.values import Replica

log = logging.getLogger("modelfleet.control")

WAITING = "vllm:num_requests_waiting"
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


_WANTED = (WAITING, *KV_CACHE, f"# TYPE {WAITING}", *(f"# TYPE {k}" for k in KV_CACHE))


def engine_load(text: str) -> float | None:
    waiting, kv = engine_readings(text)
    if waiting is None and kv is None:
        return None
    return (waiting or 0.0) + (kv or 0.0)


def engine_readings(text: str) -> tuple[float | None, float | None]:
    """(requests waiting, KV-cache use) from an engine's /metrics; None for what it does not export."""
    waiting = kv = None
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(_WANTED))
    for family in text_string_to_metric_families(wanted + "\n"):
        if family.name == WAITING:
            waiting = sum(s.value for s in family.samples)
        elif family.name in KV_CACHE and kv is None:
            kv = max((s.value for s in family.samples), default=0.0)
    return waiting, kv


class LoadScraper:
    def __init__(self, replicas: list[Replica], settings: LoadMetrics) -> None:
        self.replicas = replicas
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._warned: set[str] = set()
        self.readings: dict[tuple[str, str], tuple[float | None, float | None]] = {}  # re-exported on /metrics
        self.loop = Periodic(f"load metrics of {replicas[0].deployment}", settings.interval, self.scrape_all)

    async def scrape(self, replica: Replica) -> None:
        assert self._session is not None
        if not replica.url:
            return
        url = replica.url.removesuffix("/v1") + self.settings.path
        try:
            async with self._session.get(url) as resp:
                text = await resp.text()
            waiting, kv = engine_readings(text) if resp.status == 200 else (None, None)
            load = None if waiting is None and kv is None else (waiting or 0.0) + (kv or 0.0)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            load, text = None, str(exc)
        if load is None:
            if replica.name not in self._warned:
                self._warned.add(replica.name)
                log.warning("replica %s: no vLLM load metrics at %s (%s)", replica.name, url, text[:120])
            return
        self._warned.discard(replica.name)
        replica.load = load
        self.readings[(replica.deployment, replica.name)] = (waiting, kv)
        replica.load_at = time.monotonic()

    async def scrape_all(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=max(0.2, self.settings.interval * 4))
            self._session = aiohttp.ClientSession(timeout=timeout)
        await asyncio.gather(*(self.scrape(r) for r in self.replicas))

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        if self._session is not None:
            await self._session.close()
