"""kubernetes deployments: a Deployment + Service in a cluster (rendered by `modelfleet deploy k8s`).

    start:  scale the Deployment to `replicas`        stop: scale it to 0 (pods drain in their grace period)
    watch:  follow the Deployment (wanted replicas, failure conditions) and its Service's EndpointSlices

The gateway talks to the pods, not to the Service: each replica is bound to one ready pod's address
from the EndpointSlices, so load-aware choice (in-flight counts, vLLM's queue and KV cache) sees each
engine, and a pod that turns unready leaves the rotation at once instead of behind a kube-proxy hash.
The replica list is fixed at `replicas` slots (as for every kind today); a slot keeps its pod while
that pod stays ready and takes the next ready pod when it goes. Pods beyond the slots (a rollout's
surge) are not used. Kubernetes API specifics live in kube_api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelfleet.background import spawn
from modelfleet.config.kubernetes import KubernetesDeployment
from modelfleet.control.platforms.kube_api import DeploymentMissing, DeploymentView, Endpoint, KubeAPI
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.errors import ConfigError
from modelfleet.values import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")


class KubernetesWorkload:
    managed = True

    def __init__(
        self, replicas: list[Replica], dep: KubernetesDeployment, registry: ReplicaRegistry,
        api: KubeAPI | None = None,
    ) -> None:  # fmt: skip
        self.replicas = replicas
        self.dep = dep
        self.registry = registry
        self.api = api or KubeAPI(dep, replicas[0].deployment)
        self.view: DeploymentView | None = None  # None: not seen yet, or missing (then `missing` is set)
        self.missing = False
        self.endpoints: list[Endpoint] = []
        self._bound: dict[int, Endpoint] = {}  # replica slot -> the pod it sends to
        self._scaled_at = ""  # the resourceVersion our last scale made: older views are stale
        self._tasks: list[asyncio.Task[None]] = []

    def _mark(self, replica: Replica, state: ReplicaState, reason: str, url: str | None = None) -> None:
        """The one place this platform changes a replica: through the registry."""
        if url is not None and url != replica.url:
            self.registry.move(replica, url)
        self.registry.mark(replica, state, reason)

    def _refresh(self) -> None:
        """Replica states from what the cluster says: scaled to 0, missing, failing, or bound to ready pods."""
        where = self.api.where
        if self.missing:
            return self._all(ReplicaState.UNHEALTHY, f"{where} does not exist; apply the manifests that "
                                                     "`modelfleet deploy k8s` renders")  # fmt: skip
        if self.view is not None and self.view.replicas == 0:
            self._bound.clear()
            return self._all(ReplicaState.STOPPED, f"{where} is scaled to 0")
        ready = {e.pod: e for e in self.endpoints}
        bound = {slot: e for slot, e in self._bound.items() if ready.get(e.pod) == e}
        spare = [e for e in self.endpoints if e not in bound.values()]
        for slot in range(len(self.replicas)):
            if slot not in bound and spare:
                bound[slot] = spare.pop(0)
        self._bound = bound
        for slot, replica in enumerate(self.replicas):
            if slot in bound:
                self._mark(replica, ReplicaState.READY, "", bound[slot].url)
            elif self.view is not None and self.view.problem:
                self._mark(replica, ReplicaState.UNHEALTHY, f"{where}: {self.view.problem}")
            elif self.view is not None:
                waiting = f"waiting for a ready pod of {where} ({len(ready)} of {self.view.replicas} ready)"
                self._mark(replica, ReplicaState.STARTING, waiting)

    def _all(self, state: ReplicaState, reason: str) -> None:
        for replica in self.replicas:
            self._mark(replica, state, reason)

    def _deployment_seen(self, view: DeploymentView | None) -> None:
        if view is not None and _older(view.version, self._scaled_at):
            return  # an event from before our own scale, still on its way through the watch
        self.missing, self.view = view is None, view
        self._refresh()

    def _endpoints_seen(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self._refresh()

    async def watch(self) -> None:
        if not self._tasks:
            self._tasks = [  # each follows with its own list-then-watch retries; spawn logs an unexpected end
                spawn(self.api.follow_deployment(self._deployment_seen), f"watch of {self.api.where}", logger=log),
                spawn(self.api.follow_endpoints(self._endpoints_seen), f"endpoint watch of {self.api.where}",
                      logger=log),
            ]  # fmt: skip

    async def start(self) -> None:
        await self._scale(self.dep.replicas)

    async def stop(self) -> None:
        await self._scale(0)

    async def _scale(self, replicas: int) -> None:
        try:
            self._scaled_at = await self.api.scale(replicas)
        except DeploymentMissing:
            self._deployment_seen(None)
        except ConfigError:
            raise  # no client or no credentials: the gateway cannot run this fleet as written
        except Exception as exc:  # the API server is unreachable, or refuses (RBAC): say so, keep serving the rest
            log.error("cannot scale %s to %d: %s", self.api.where, replicas, exc)
            self._all(ReplicaState.UNHEALTHY, f"cannot scale {self.api.where} to {replicas}: {exc}")
        else:
            log.info("scaled %s to %d", self.api.where, replicas)
            # Known now, before the watch says so. Scaled up: an old failure condition no longer applies.
            # Scaled to 0: no new request goes to a terminating pod; requests in flight finish on it.
            self._deployment_seen(DeploymentView(replicas, 0, None, self._scaled_at))
        await self.watch()  # after the scale, so its first listing cannot predate it

    async def shutdown(self) -> None:
        """The Deployment outlives the gateway: only stop watching it."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.api.aclose()


def _older(version: str, than: str) -> bool:
    """resourceVersions are etcd revisions: compared as numbers where both are (else never older)."""
    return version.isdigit() and than.isdigit() and int(version) < int(than)
