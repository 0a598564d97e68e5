"""kubernetes deployments: a Deployment + Service in a cluster (rendered by `modelfleet deploy k8s`).

    start:  scale the Deployment to `replicas`        stop: scale it to 0 (pods drain in their grace period)
    watch:  follow the Deployment (wanted replicas, failure conditions) and its Service's EndpointSlices

The gateway talks to the pods, not to the Service: each replica is bound to one ready pod's address
from the EndpointSlices, so load-aware choice (in-flight counts, vLLM's queue and KV cache) sees each
engine, and a pod that turns unready leaves the rotation at once instead of behind a kube-proxy hash.
The replica list is fixed at `replicas` slots (as for every kind today); a slot keeps its pod while
that pod stays ready and takes the next ready pod when it goes. Pods beyond the slots (a rollout's
surge) are not used. Kubernetes API specifics live in kube_api.py.

Several gateway pods (the gateway's HPA) each run a control plane. Only the pod holding the
deployment's Lease (kube_lease.py) acts: the control plane (deployments.py) asks `leading` before it
decides, and the holder reconciles spec.replicas with what it wants every `reconcile_interval` (someone
scaled it by hand). What the pods must agree on lives on the Deployment itself, as annotations any pod
may write and every pod watches already:

    modelfleet.dev/desired       {"state", "reason", "since"}: what the holder applied, or what another pod
                                 asks it for (a person's start or stop, a wake); the last one written wins,
                                 ordered by the Deployment's resourceVersion, never by `since` (pods' wall
                                 clocks differ: a pod whose clock is behind would be ignored)
    modelfleet.dev/last-request  when a request last reached this deployment on any pod (for idle stop);
                                 each pod writes its own latest, at most every idle_stop_after/4 (<= 30s)

The Deployment, not Redis or the store, because it is the one thing every pod already reads and watches,
the RBAC is one more verb on it, and no gateway setting (state.counters) becomes a requirement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from modelfleet.background import Periodic, spawn
from modelfleet.config.kubernetes import KubernetesDeployment
from modelfleet.control.platforms.kube_api import DeploymentMissing, DeploymentView, Endpoint, KubeAPI
from modelfleet.control.platforms.kube_lease import LeaderLease
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.control.schedules import Desired
from modelfleet.errors import ConfigError
from modelfleet.values import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")

DESIRED = "modelfleet.dev/desired"
LAST_REQUEST = "modelfleet.dev/last-request"


class KubernetesWorkload:
    managed = True
    shared = True  # several gateway pods may run it: the Lease holder acts (deployments.py asks `leading`)

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
        self.lease = LeaderLease(self.api, dep.lease_duration)
        self._want: int | None = None  # replicas the last start or stop asked for: what reconcile keeps
        self._scaling = asyncio.Lock()  # a reconcile never runs between a start's decision and its scale
        # Replicas a start or stop is asking for right now: until its answer, a view saying otherwise was
        # written before it (an annotation another pod published) and would undo a wake's "starting".
        self._pending: int | None = None
        # The desired-state annotation this pod last wrote or took, and the Deployment's resourceVersion then:
        # a different value in a view at least that new was written by another pod since (news).
        self._known: tuple[str, str] = ("", "")
        self._annotated_at = ""  # the resourceVersion of the view the annotations came from
        self._published_request = 0.0  # the last-request time this pod wrote last
        self._published_at = float("-inf")  # and when (the control plane's clock)
        # Each reports its own failures (the Lease step raises an API error; reconcile logs what it fixed).
        self._elect = Periodic(f"Lease of {self.api.where}", self.lease.period, self._elect_step, logger=log)
        self._reconcile = Periodic(f"reconcile of {self.api.where}", dep.reconcile_interval, self.reconcile,
                                   logger=log)  # fmt: skip

    # ---- several gateway pods: the Lease, reconciling, and what the pods share through annotations
    @property
    def leading(self) -> bool:
        return self.lease.leading

    @property
    def seen(self) -> bool:
        """The Deployment was listed at least once (or found missing): its annotations are known."""
        return self.view is not None or self.missing

    async def campaign(self) -> None:
        """Follow the Deployment, try for its Lease now and then every duration/3; reconcile while holding it."""
        await self.watch()
        deadline = time.monotonic() + min(10.0, self.dep.lease_duration)
        while not self.seen and time.monotonic() < deadline:  # know what was decided before deciding anything
            await asyncio.sleep(0.02)
        try:
            await self.lease.step()
        except ConfigError:
            raise  # no client or no credentials: the gateway cannot run this fleet as written
        except Exception as exc:  # the loop below tries again (and logs it); meanwhile the replicas say why
            if self.view is None:
                self._all(ReplicaState.UNHEALTHY, f"cannot reach the API server for {self.api.where}: {exc}")
        self._elect.start()
        self._reconcile.start()

    async def _elect_step(self) -> None:
        try:
            await self.lease.step()
        except Exception:
            self.lease._lose("cannot reach the API server")
            raise

    async def reconcile(self) -> None:
        """While holding the Lease: put spec.replicas back to what was last asked (scaled by hand, or drifted)."""
        async with self._scaling:
            if not self.leading or self._want is None or self.view is None or self.missing:
                return
            if self.view.replicas != self._want:
                log.warning("%s has %d replicas, not %d as the control plane wants: scaling it back",
                            self.api.where, self.view.replicas, self._want)  # fmt: skip
                await self._scale(self._want)

    def published(self) -> Desired | None:
        """The desired state on the Deployment (the holder's, or what another pod asked for); None if unreadable."""
        raw = (self.view.annotations if self.view else {}).get(DESIRED)
        try:
            d = json.loads(raw) if raw else None
            return Desired(d["state"], str(d["reason"]), float(d["since"])) if d else None
        except (ValueError, KeyError, TypeError):
            return None

    def last_request(self) -> float | None:
        """When a request last reached the deployment on any gateway pod, as they published it."""
        raw = (self.view.annotations if self.view else {}).get(LAST_REQUEST)
        try:
            return float(raw) if raw else None
        except ValueError:
            return None

    def news(self) -> Desired | None:
        """The published desired state if another pod wrote it after what this pod last wrote or took (then taken)."""
        raw = (self.view.annotations if self.view else {}).get(DESIRED) or ""
        known, at = self._known
        if not raw or raw == known or _older(self._annotated_at, at):
            return None
        self._known = (raw, self._annotated_at)
        return self.published()

    async def publish(self, desired: Desired) -> None:
        body = {"state": desired.state, "reason": desired.reason, "since": desired.since}
        raw = json.dumps(body, sort_keys=True)
        self._known = (raw, await self.api.annotate({DESIRED: raw}))

    async def publish_activity(self, at: float, now: float, every: float) -> None:
        """This pod's latest request time `at`, written at most once per `every` seconds (an API write each).

        Throttled on when it was written, not on `at`: the newest time always goes out within `every`, so
        the holder sees a pod's last request at most `every` late (and idle stop waits for it). Two pods
        that write at once race (a merge patch has no precondition), and an older time may land last: a
        pod that then sees an older time than its own writes it again, in its next turn.
        """
        if now - self._published_at < every:
            return
        theirs = self.last_request()
        if theirs is not None and theirs >= at:
            return  # another pod's later request covers it: no write
        if at <= self._published_request and (theirs is None or not self.seen):
            return  # written already, and nothing says it was lost
        await self.api.annotate({LAST_REQUEST: f"{at:.3f}"})
        self._published_request, self._published_at = at, now

    async def scaled_up(self, timeout: float) -> bool:
        """Wait until the Deployment wants replicas (after asking the Lease holder to start it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.view is not None and self.view.replicas > 0:
                return True
            await asyncio.sleep(0.05)
        return False

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

    def _deployment_seen(self, view: DeploymentView | None, made_up: bool = False) -> None:
        if view is not None and _older(view.version, self._scaled_at):
            return  # an event from before our own scale, still on its way through the watch
        if view is not None and self._pending is not None and view.replicas != self._pending:
            return  # from before the scale under way: its answer says what is
        self.missing, self.view = view is None, view
        if view is not None and not made_up:  # a view made after a scale keeps older annotations
            self._annotated_at = view.version
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
        self._pending = self.dep.replicas  # at once, before waiting for the lock
        async with self._scaling:
            self._want = self.dep.replicas
            await self._scale(self.dep.replicas)

    async def stop(self) -> None:
        self._pending = 0
        async with self._scaling:
            self._want = 0
            await self._scale(0)

    async def _scale(self, replicas: int) -> None:
        self._pending = replicas
        try:
            scaled_at = await self.api.scale(replicas)
        except DeploymentMissing:
            self._pending = None
            self._deployment_seen(None)
        except ConfigError:
            self._pending = None
            raise  # no client or no credentials: the gateway cannot run this fleet as written
        except Exception as exc:  # the API server is unreachable, or refuses (RBAC): say so, keep serving the rest
            self._pending = None
            log.error("cannot scale %s to %d: %s", self.api.where, replicas, exc)
            self._all(ReplicaState.UNHEALTHY, f"cannot scale {self.api.where} to {replicas}: {exc}")
        else:
            self._pending, self._scaled_at = None, scaled_at
            log.info("scaled %s to %d", self.api.where, replicas)
            # Known now, before the watch says so. Scaled up: an old failure condition no longer applies.
            # Scaled to 0: no new request goes to a terminating pod; requests in flight finish on it.
            kept = self.view.annotations if self.view else {}  # until the watch brings the object itself
            self._deployment_seen(DeploymentView(replicas, 0, None, self._scaled_at, kept), made_up=True)
        finally:
            self._pending = None  # also when cancelled
        await self.watch()  # after the scale, so its first listing cannot predate it

    async def shutdown(self) -> None:
        """The Deployment outlives the gateway: stop watching it, and hand the Lease on at once."""
        await self._elect.stop()
        await self._reconcile.stop()
        try:
            await self.lease.release()
        except Exception as exc:
            log.warning("cannot release the Lease of %s (another pod takes over when it expires): %s",
                        self.api.where, exc)  # fmt: skip
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
