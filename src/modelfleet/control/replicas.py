"""Keeping engine replicas alive: a dead engine process is started again, on the same port."""

from __future__ import annotations

import asyncio
import logging

from modelfleet.config import LlamaCppDeployment
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.engine.model import bundled_model_path
from modelfleet.engine.process import EngineProcess, EngineStartError
from modelfleet.values import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")

_BACKOFF_START, _BACKOFF_MAX = 1.0, 30.0


class EngineSupervisor:
    """Run one llama-cpp replica; when its process dies, mark it unhealthy and start it again."""

    def __init__(self, replica: Replica, dep: LlamaCppDeployment, registry: ReplicaRegistry) -> None:
        self.replica = replica
        self.dep = dep
        self.registry = registry
        self.process: EngineProcess | None = None
        self.port = 0  # picked by the first start, kept across restarts so the replica's URL is stable

    def _set(self, state: ReplicaState, reason: str = "") -> None:
        self.registry.mark(self.replica, state, reason)

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
                self.registry.move(self.replica, await self.process.start(self.dep.startup_timeout))
                self.port = self.process.port
            except Exception as exc:  # EngineStartError: a bad model file, no free port, a missing binary...
                log.error("replica %s failed to start: %s", self.replica.name, exc,
                          exc_info=not isinstance(exc, EngineStartError))  # fmt: skip
                self._set(ReplicaState.UNHEALTHY, f"failed to start: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            log.info("replica %s ready at %s (pid %s)", self.replica.name, self.replica.url, self.process.pid)
            self._set(ReplicaState.READY)
            backoff = _BACKOFF_START
            code = await self.process.wait()
            log.error("replica %s engine exited with code %s; restarting", self.replica.name, code)
            # Starting, not unhealthy: requests queued for this replica wait for the restart.
            self._set(ReplicaState.STARTING, f"restarting: engine exited with code {code}")

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
