"""The control plane: brings every deployment's replicas up, keeps them up, takes them down.

    platforms/      where each deployment runs, and how to start and stop it there
    registry.py     the one writer of replica state, telling every listener of each change
    deployments.py  what should run (schedules, people, wake-on-request), and acting on it
    health.py       active checks and passive ejection;   load.py  engine load readings

The gateway reads replica state through the same `Replica` objects, reports failed requests
through `request_failed`, asks for a stopped deployment through `deployments.wake`, and listens to
the registry, so queued requests move the moment a replica turns ready (or fail fast when none is left).
"""

from __future__ import annotations

import asyncio
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
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.state.store import Store
from modelfleet.values import Replica, ReplicaState


class ControlPlane:
    def __init__(
        self,
        fleet: Fleet,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        manage: bool = True,
    ) -> None:
        self.fleet = fleet
        self.registry = registry = ReplicaRegistry()
        self.replicas = registry.replicas
        self.health: dict[str, HealthChecker] = {}
        self.platforms: dict[str, Platform] = {}
        self._scrapers: list[LoadScraper] = []
        self._backends: list[Prober] = []
        for name, dep in fleet.deployments.items():
            backend: Prober
            if isinstance(dep, LlamaCppDeployment):
                reps = registry.add(name, [Replica(name, f"{name}-{i}", url="") for i in range(dep.replicas)])
                self.platforms[name] = LocalEngines(reps, dep, registry)
                backend = OpenAIHTTPBackend()
            elif isinstance(dep, OpenAIDeployment):
                reps = registry.add(name, [Replica(name, f"{name}-{i}", url=url) for i, url in enumerate(dep.urls)])
                self.platforms[name] = ExternalServer(name)
                backend = OpenAIHTTPBackend(dep.api_key.get_secret_value() if dep.api_key else None)
            elif isinstance(dep, SageMakerDeployment):
                from modelfleet.control.platforms.sagemaker import SageMakerEndpoint

                reps = registry.add(name, [Replica(name, f"{name}-0", url=f"sagemaker://{dep.endpoint}")])
                # The endpoint's own status is its health check (and an ejected one's way back).
                backend = endpoint = SageMakerEndpoint(reps[0], dep, registry)
                self.platforms[name] = endpoint
            elif isinstance(dep, KubernetesDeployment):
                from modelfleet.control.platforms.kubernetes import KubernetesWorkload

                # Bound to pod addresses from the EndpointSlices as pods turn ready (see platforms/kubernetes.py).
                reps = registry.add(name, [Replica(name, f"{name}-{i}", url="") for i in range(dep.replicas)])
                self.platforms[name] = KubernetesWorkload(reps, dep, registry)
                backend = OpenAIHTTPBackend()
            self._backends.append(backend)
            # Engines and endpoints are watched by their platform; for them health checks only bring back
            # ejected replicas.
            active = isinstance(dep, OpenAIDeployment)
            self.health[name] = HealthChecker(reps, dep.health, backend, registry, active=active)
            if dep.load_metrics is not None:
                self._scrapers.append(LoadScraper(reps, dep.load_metrics))
        self.deployments = Deployments(fleet, self.platforms, registry, store, clock, manage=manage)
        registry.listen(self.deployments.replica_changed)

    def request_failed(self, replica: Replica, reason: str, in_a_row: int) -> bool:
        return self.health[replica.deployment].request_failed(replica, reason, in_a_row)

    async def start(self) -> None:
        """Start what should run; engines come up in the background, URL replicas get a first check now."""
        await self.deployments.start()
        await asyncio.gather(*(c.first_check() for c in self.health.values() if c.active))
        for checker in self.health.values():
            if checker.active:
                checker.loop.start()
        for scraper in self._scrapers:
            scraper.start()

    async def stop(self) -> None:
        for checker in self.health.values():
            await checker.loop.stop()
        for scraper in self._scrapers:
            await scraper.stop()
        await self.deployments.shutdown()
        for backend in self._backends:
            await backend.aclose()
        for name in self.replicas:
            self.registry.mark_all(name, ReplicaState.STOPPED, "stopped")

    def not_ready(self) -> dict[str, list[dict[str, str]]]:
        return self.registry.not_ready()
