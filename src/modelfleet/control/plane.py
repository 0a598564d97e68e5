"""The control plane: brings every deployment's replicas up, keeps them up, takes them down.

It is the only writer of replica state. The gateway reads that state through the same `Replica`
objects and is told of changes through `on_change(deployment)`, so queued requests move the moment
a replica turns ready (or fail fast when none is left).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from modelfleet.config import Fleet, LlamaCppDeployment, OpenAIDeployment
from modelfleet.control.replicas import EngineSupervisor, URLProber
from modelfleet.types import Replica, ReplicaState


class ControlPlane:
    def __init__(self, fleet: Fleet, on_change: Callable[[str], None] = lambda _: None) -> None:
        self.fleet = fleet
        self.on_change = on_change
        self.replicas: dict[str, list[Replica]] = {}
        self._supervisors: list[EngineSupervisor] = []
        self._probers: list[URLProber] = []
        self._tasks: list[asyncio.Task[None]] = []
        for name, dep in fleet.deployments.items():
            if isinstance(dep, LlamaCppDeployment):
                reps = [Replica(name, f"{name}-{i}", url="") for i in range(dep.replicas)]
                self._supervisors += [EngineSupervisor(r, dep, self._changed) for r in reps]
            elif isinstance(dep, OpenAIDeployment):
                reps = [Replica(name, f"{name}-{i}", url=url) for i, url in enumerate(dep.urls)]
                self._probers.append(URLProber(reps, dep, self._changed))
            self.replicas[name] = reps

    def _changed(self, replica: Replica) -> None:
        self.on_change(replica.deployment)

    async def start(self) -> None:
        """Start every replica; engines come up in the background, URL replicas get a first probe now."""
        for sup in self._supervisors:
            self._tasks.append(asyncio.create_task(sup.run(), name=f"engine:{sup.replica.name}"))
        for prober in self._probers:
            await prober.probe_all()
            self._tasks.append(asyncio.create_task(prober.run(), name=f"probe:{prober.deployment}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(sup.stop() for sup in self._supervisors))
        for prober in self._probers:
            await prober.aclose()
        for reps in self.replicas.values():
            for r in reps:
                r.mark(ReplicaState.STOPPED, "stopped")
                self.on_change(r.deployment)

    def not_ready(self) -> dict[str, list[dict[str, str]]]:
        return {
            name: [{"replica": r.name, "state": r.state.value, "reason": r.reason} for r in reps if not r.ready]
            for name, reps in self.replicas.items()
            if any(not r.ready for r in reps)
        }
