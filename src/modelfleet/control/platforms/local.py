"""llama-cpp deployments: one supervised engine process per replica on this machine."""

from __future__ import annotations

import asyncio
import contextlib

from modelfleet.background import spawn
from modelfleet.config import LlamaCppDeployment
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.control.replicas import EngineSupervisor
from modelfleet.values import Replica, ReplicaState


class LocalEngines:
    managed = True

    def __init__(self, replicas: list[Replica], dep: LlamaCppDeployment, registry: ReplicaRegistry) -> None:
        self.replicas = replicas
        self.registry = registry
        self.supervisors = [EngineSupervisor(r, dep, registry) for r in replicas]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [spawn(s.run(), f"engine supervisor of {s.replica.name}") for s in self.supervisors]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(s.stop() for s in self.supervisors))
        for r in self.replicas:
            self.registry.mark(r, ReplicaState.STOPPED, "stopped")

    async def watch(self) -> None:
        return None  # engines belong to the primary gateway

    async def shutdown(self) -> None:
        await self.stop()
