"""Keeping replicas alive: engine processes are restarted, URL replicas are probed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from modelfleet.backends.openai_http import OpenAIHTTPBackend
from modelfleet.config import LlamaCppDeployment, OpenAIDeployment
from modelfleet.engine.model import bundled_model_path
from modelfleet.engine.process import EngineProcess, EngineStartError
from modelfleet.types import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")

_BACKOFF_START, _BACKOFF_MAX = 1.0, 30.0


class EngineSupervisor:
    """Run one llama-cpp replica; when its process dies, mark it unhealthy and start it again."""

    def __init__(self, replica: Replica, dep: LlamaCppDeployment, changed: Callable[[Replica], None]) -> None:
        self.replica = replica
        self.dep = dep
        self.changed = changed
        self.process: EngineProcess | None = None
        self.restarts = 0
        self.port = 0  # picked by the first start, kept across restarts so the replica's URL is stable

    def _set(self, state: ReplicaState, reason: str = "") -> None:
        self.replica.mark(state, reason)
        self.changed(self.replica)

    async def run(self) -> None:
        backoff = _BACKOFF_START
        model_path = self.dep.model_path or bundled_model_path()
        while True:
            self.process = EngineProcess(
                self.replica.name,
                model_path=model_path,
                model_name=self.replica.deployment,
                threads=self.dep.threads,
                context_size=self.dep.context_size,
                port=self.port,
            )
            self._set(ReplicaState.STARTING, "engine starting")
            try:
                self.replica.url = await self.process.start(self.dep.startup_timeout)
                self.port = self.process.port
            except EngineStartError as exc:
                log.error("replica %s failed to start: %s", self.replica.name, exc)
                self._set(ReplicaState.UNHEALTHY, f"failed to start: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            log.info("replica %s ready at %s (pid %s)", self.replica.name, self.replica.url, self.process.pid)
            self._set(ReplicaState.READY)
            backoff = _BACKOFF_START
            code = await self.process.wait()
            self.restarts += 1
            log.error("replica %s engine exited with code %s; restarting", self.replica.name, code)
            # Starting, not unhealthy: requests queued for this replica wait for the restart.
            self._set(ReplicaState.STARTING, f"restarting: engine exited with code {code}")

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()


class URLProber:
    """Probe the replicas of an `openai` deployment every `health_interval`."""

    def __init__(self, replicas: list[Replica], dep: OpenAIDeployment, changed: Callable[[Replica], None]) -> None:
        self.replicas = replicas
        self.deployment = replicas[0].deployment if replicas else ""
        self.dep = dep
        self.changed = changed
        self.backend = OpenAIHTTPBackend(dep.api_key)

    async def probe_all(self) -> None:
        timeout = min(self.dep.health_interval, 5.0)
        reasons = await asyncio.gather(*(self.backend.probe(r, timeout, self.dep.health_path) for r in self.replicas))
        for replica, reason in zip(self.replicas, reasons, strict=True):
            state = ReplicaState.READY if reason is None else ReplicaState.UNHEALTHY
            if state is not replica.state or (reason and reason != replica.reason):
                if state is ReplicaState.READY:
                    log.info("replica %s (%s) is ready", replica.name, replica.url)
                else:
                    log.warning("replica %s (%s) is unhealthy: %s", replica.name, replica.url, reason)
                replica.mark(state, reason or "")
                self.changed(replica)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.dep.health_interval)
            await self.probe_all()

    async def aclose(self) -> None:
        await self.backend.aclose()
