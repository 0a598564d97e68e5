"""The control plane: brings every deployment's replicas up, keeps them up, takes them down.

It is the only writer of replica state. The gateway reads that state through the same `Replica`
objects, reports failed requests through `request_failed`, and is told of changes through
`on_change(deployment)`, so queued requests move the moment a replica turns ready (or fail fast
when none is left).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from modelfleet.backends.openai_http import OpenAIHTTPBackend
from modelfleet.config import Fleet, LlamaCppDeployment, OpenAIDeployment
from modelfleet.control.health import HealthChecker
from modelfleet.control.load import LoadScraper
from modelfleet.control.replicas import EngineSupervisor
from modelfleet.types import Replica, ReplicaState


class ControlPlane:
    def __init__(self, fleet: Fleet, on_change: Callable[[str], None] = lambda _: None) -> None:
        self.fleet = fleet
        self.on_change = on_change
        self.replicas: dict[str, list[Replica]] = {}
        self.health: dict[str, HealthChecker] = {}
        self._supervisors: list[EngineSupervisor] = []
        self._scrapers: list[LoadScraper] = []
        self._backends: list[OpenAIHTTPBackend] = []
        self._tasks: list[asyncio.Task[None]] = []
        for name, dep in fleet.deployments.items():
            if isinstance(dep, LlamaCppDeployment):
                reps = [Replica(name, f"{name}-{i}", url="") for i in range(dep.replicas)]
                self._supervisors += [EngineSupervisor(r, dep, self._changed) for r in reps]
                backend = OpenAIHTTPBackend()
            elif isinstance(dep, OpenAIDeployment):
                reps = [Replica(name, f"{name}-{i}", url=url) for i, url in enumerate(dep.urls)]
                backend = OpenAIHTTPBackend(dep.api_key)
            self._backends.append(backend)
            # Engines are watched by their supervisor; for them health checks only bring back ejected replicas.
            active = not isinstance(dep, LlamaCppDeployment)
            self.health[name] = HealthChecker(reps, dep.health, backend, self._changed, active=active)
            if dep.load_metrics is not None:
                self._scrapers.append(LoadScraper(reps, dep.load_metrics))
            self.replicas[name] = reps

    def _changed(self, replica: Replica) -> None:
        self.on_change(replica.deployment)

    def request_failed(self, replica: Replica, reason: str) -> None:
        self.health[replica.deployment].request_failed(replica, reason)

    async def start(self) -> None:
        """Start every replica; engines come up in the background, URL replicas get a first check now."""
        for sup in self._supervisors:
            self._tasks.append(asyncio.create_task(sup.run(), name=f"engine:{sup.replica.name}"))
        await asyncio.gather(*(c.first_check() for c in self.health.values() if c.active))
        for name, checker in self.health.items():
            self._tasks.append(asyncio.create_task(checker.run(), name=f"health:{name}"))
        for scraper in self._scrapers:
            self._tasks.append(asyncio.create_task(scraper.run(), name="load-metrics"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(sup.stop() for sup in self._supervisors))
        for backend in self._backends:
            await backend.aclose()
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
