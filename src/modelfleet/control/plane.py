"""The control plane: brings every deployment's replicas up, keeps them up, takes them down.

    platforms/      where each deployment runs, and how to start and stop it there
    deployments.py  what should run (schedules, people, wake-on-request), and acting on it
    health.py       active checks and passive ejection;   load.py  engine load readings

It is the only writer of replica state. The gateway reads that state through the same `Replica`
objects, reports failed requests through `request_failed`, asks for a stopped deployment through
`wake`, and is told of changes through `on_change(deployment)`, so queued requests move the moment
a replica turns ready (or fail fast when none is left).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from modelfleet.backends.openai_http import OpenAIHTTPBackend
from modelfleet.config import Fleet, KubernetesDeployment, LlamaCppDeployment, OpenAIDeployment, SageMakerDeployment
from modelfleet.control.deployments import Deployments
from modelfleet.control.health import HealthChecker, Prober
from modelfleet.control.load import LoadScraper
from modelfleet.control.platforms.base import Platform
from modelfleet.control.platforms.local import LocalEngines
from modelfleet.control.platforms.url import ExternalServer
from modelfleet.state.store import Store
from modelfleet.types import Replica, ReplicaState


class ControlPlane:
    def __init__(
        self,
        fleet: Fleet,
        on_change: Callable[[str], None] = lambda _: None,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        manage: bool = True,
    ) -> None:
        self.fleet = fleet
        self.on_change = on_change
        self.replicas: dict[str, list[Replica]] = {}
        self.health: dict[str, HealthChecker] = {}
        self.platforms: dict[str, Platform] = {}
        self._scrapers: list[LoadScraper] = []
        self._backends: list[Prober] = []
        self._tasks: list[asyncio.Task[None]] = []
        for name, dep in fleet.deployments.items():
            if isinstance(dep, LlamaCppDeployment):
                reps = [Replica(name, f"{name}-{i}", url="") for i in range(dep.replicas)]
                self.platforms[name] = LocalEngines(reps, dep, self._changed)
                backend = OpenAIHTTPBackend()
            elif isinstance(dep, OpenAIDeployment):
                reps = [Replica(name, f"{name}-{i}", url=url) for i, url in enumerate(dep.urls)]
                self.platforms[name] = ExternalServer(name)
                backend = OpenAIHTTPBackend(dep.api_key)
            elif isinstance(dep, SageMakerDeployment):
                from modelfleet.control.platforms.sagemaker import SageMakerEndpoint

                reps = [Replica(name, f"{name}-0", url=f"sagemaker://{dep.endpoint}")]
                # The endpoint's own status is its health check (and an ejected one's way back).
                backend = endpoint = SageMakerEndpoint(reps[0], dep, self._changed)
                self.platforms[name] = endpoint
            elif isinstance(dep, KubernetesDeployment):
                from modelfleet.control.platforms.kubernetes import KubernetesWorkload

                # Bound to pod addresses from the EndpointSlices as pods turn ready (see platforms/kubernetes.py).
                reps = [Replica(name, f"{name}-{i}", url="") for i in range(dep.replicas)]
                self.platforms[name] = KubernetesWorkload(reps, dep, self._changed)
                backend = OpenAIHTTPBackend()
            self._backends.append(backend)
            # Engines are watched by their supervisor; for them health checks only bring back ejected replicas.
            active = isinstance(dep, OpenAIDeployment)
            self.health[name] = HealthChecker(reps, dep.health, backend, self._changed, active=active)
            if dep.load_metrics is not None:
                self._scrapers.append(LoadScraper(reps, dep.load_metrics))
            self.replicas[name] = reps
        self.deployments = Deployments(fleet, self.platforms, self.replicas, store, clock, manage=manage)

    def _changed(self, replica: Replica) -> None:
        self.deployments.replica_changed(replica)
        self.on_change(replica.deployment)

    def wake(self, deployment: str) -> float:
        return self.deployments.wake(deployment)

    def request_failed(self, replica: Replica, reason: str) -> None:
        self.health[replica.deployment].request_failed(replica, reason)

    async def start(self) -> None:
        """Start what should run; engines come up in the background, URL replicas get a first check now."""
        await self.deployments.start()
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
        await self.deployments.shutdown()
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
