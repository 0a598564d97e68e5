"""Deployment lifecycle: what should run (desired), deciding it from schedules, people and requests,
and acting on the platforms. The only place that starts or stops a deployment.

    desired <- schedule boundaries, idle stop (schedules.py), `deployments start|stop`, wake-on-request
    act     -> platform.start() / platform.stop()
    observe <- the replicas' states (the registry, written by the platforms and health checks)

Desired state is kept in the store, so a restarted gateway resumes what it was told (and applies any
schedule boundary that passed while it was down). Time comes from `clock`, so tests drive it.

A wake that fails (AccessDenied, a quota, a missing image) is logged, shown in `status()` and in
/readyz through the replicas' reason, and leaves the deployment stopped: the next request tries again.
Extra gateway workers decide nothing: they ask the primary (`primary`, see channel.py) to wake,
start or stop, and show its status.

A `shared` platform (kubernetes) may be run by several gateway pods at once, each with its own control
plane: only the pod whose platform is `leading` (holds its Lease) acts on it. The others follow the
desired state the holder publishes, publish their own requests' times (so idle stop counts every
pod's traffic), and hand a person's start or stop, or a wake, to the holder by publishing it
(platforms/kubernetes.py says how).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from modelfleet.background import Periodic, spawn
from modelfleet.config import Fleet
from modelfleet.control import schedules
from modelfleet.control.platforms.base import NotManaged, Platform
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.control.schedules import Desired
from modelfleet.errors import Unavailable
from modelfleet.state.store import Store
from modelfleet.values import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")

TICK = 1.0


def observed(replicas: list[Replica]) -> str:
    """One word for a deployment's replicas: running, starting, stopped, degraded or down."""
    states = {r.state for r in replicas}
    if ReplicaState.READY in states:
        return "running" if states == {ReplicaState.READY} else "degraded"
    if ReplicaState.STARTING in states:
        return "starting"
    if states == {ReplicaState.STOPPED}:
        return "stopped"
    return "down"


class WakeStats:
    """Counted for /metrics: wakes per deployment and how long each took to a ready replica."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.seconds: dict[str, list[float]] = {}
        self.failed: dict[str, int] = {}
        self.wakeable: tuple[str, ...] = ()  # deployments with wake_on_request: exported from the start


class Primary(Protocol):
    """How an extra gateway worker reaches the primary's lifecycle (channel.py)."""

    async def wake(self, name: str) -> float: ...
    async def set(self, name: str, state: str, reason: str) -> dict[str, Any]: ...
    async def status(self) -> list[dict[str, Any]]: ...
    async def activity(self, requests: dict[str, int]) -> None: ...


class Deployments:
    def __init__(
        self,
        fleet: Fleet,
        platforms: dict[str, Platform],
        registry: ReplicaRegistry,
        store: Store | None,
        clock: Callable[[], float] = time.time,
        *,
        manage: bool = True,
    ) -> None:
        self.fleet = fleet
        self.manage = manage  # False in extra gateway workers: the primary decides, they only watch
        self.primary: Primary | None = None  # set in extra workers
        self.platforms = platforms
        self.registry = registry
        self.replicas = registry.replicas
        self.store = store
        self.clock = clock
        self.desired: dict[str, Desired] = {}
        self.wakes = WakeStats()
        self.wakes.wakeable = tuple(n for n, d in fleet.deployments.items() if d.wake_on_request)
        self.errors: dict[str, str] = {}  # the last failed start or wake, until the next one succeeds
        self._woken_at: dict[str, float] = {}
        self._last_checked = clock()
        self._last_request: dict[str, float] = {}
        self._seen_requests: dict[str, int] = {}
        self._elsewhere: dict[str, dict[str, int]] = {}  # requests served by extra workers, per worker
        self._lock = asyncio.Lock()
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._own_request: dict[str, float] = {}  # a request last reached it through this gateway (pod)
        self._led: set[str] = set()  # shared deployments this pod has acted on since it took their Lease
        self._undecided: set[str] = set()  # desired only from the schedule at start: nobody decided it yet
        self._loop = Periodic("deployment lifecycle", TICK, self.tick if manage else self._report, logger=log)

    def managed(self, name: str) -> bool:
        return self.platforms[name].managed

    def _shared(self, name: str) -> bool:
        return getattr(self.platforms[name], "shared", False)

    def _follows(self, name: str) -> bool:
        """A shared deployment that another gateway pod acts on (it holds the Lease)."""
        return self._shared(name) and not self.platforms[name].leading  # type: ignore[attr-defined]

    async def start(self) -> None:
        """Resume what the store remembers (or what schedules say), then start what should run."""
        if not self.manage:
            for platform in self.platforms.values():
                await platform.watch()
            self._loop.start()
            return
        now = self.clock()
        remembered = await self._load()
        for name in self.fleet.deployments:
            if not self.managed(name):
                continue
            dep = self.fleet.deployments[name]
            was = remembered.get(name)
            if was is None:
                self.desired[name] = schedules.initial(dep.schedule, now)
                self._undecided.add(name)  # a shared one takes what the other gateway pods decided instead
            else:
                desired, checked = was
                self.desired[name] = schedules.decide(
                    schedule=dep.schedule, idle_stop_after=None, desired=desired, last_checked=checked,
                    last_request=None, now=now,
                )  # fmt: skip
        for name, want in self.desired.items():
            if self._shared(name):  # acted on once (and while) this pod holds its Lease
                await self.platforms[name].campaign()  # type: ignore[attr-defined]
                await self._coordinate(name, now)
                continue
            try:  # one platform that cannot be reached must not keep the gateway from serving the rest
                if want.state == "running":
                    await self.platforms[name].start()
                else:
                    await self.platforms[name].stop()
                    log.info("deployment %s stays stopped: %s", name, want.reason)
            except NotManaged:
                raise
            except Exception as exc:
                self.errors[name] = (
                    f"{'start' if want.state == 'running' else 'stop'} failed: {type(exc).__name__}: {exc}"
                )
                log.error("deployment %s: %s", name, self.errors[name])
        self._last_checked = now
        await self._save()
        self._loop.start()

    async def shutdown(self) -> None:
        await self._loop.stop()
        if self.manage:
            await self._save()
        for platform in self.platforms.values():
            await platform.shutdown()

    def _requests(self) -> dict[str, int]:
        return {name: sum(r.traffic.requests for r in reps) for name, reps in self.replicas.items()}

    async def _report(self) -> None:
        """In a worker: tell the primary how many requests it served, so idle stop sees them."""
        if self.primary is not None:
            await self.primary.activity(self._requests())

    def served_elsewhere(self, worker: str, requests: dict[str, int]) -> None:
        self._elsewhere[worker] = requests

    async def tick(self) -> None:
        """Let time pass: schedule boundaries and idle stops."""
        now = self.clock()
        mine = self._requests()
        for name in self.replicas:  # a request since the last tick, on any worker, counts as activity
            n = mine[name] + sum(w.get(name, 0) for w in self._elsewhere.values())
            if n != self._seen_requests.get(name, 0):
                self._seen_requests[name] = n
                self._last_request[name] = self._own_request[name] = now
        changed = False
        for name in list(self.desired):
            if self._shared(name) and not await self._coordinate(name, now):
                continue
            want = self.desired[name]
            dep = self.fleet.deployments[name]
            schedule = dep.schedule
            new = schedules.decide(
                schedule=schedule, idle_stop_after=schedule.idle_stop_after if schedule else None, desired=want,
                last_checked=self._last_checked, last_request=self._last_request.get(name), now=now,
            )  # fmt: skip
            if new != want:
                changed = True
                await self._apply(name, new)
        self._last_checked = now
        if changed:
            await self._save()

    async def _coordinate(self, name: str, now: float) -> bool:
        """A shared deployment: trade what this pod knows through the platform; True if this pod acts on it."""
        platform: Any = self.platforms[name]
        if not platform.seen:
            return False  # what the other pods decided is not known yet: decide nothing
        dep = self.fleet.deployments[name]
        idle = dep.schedule.idle_stop_after if dep.schedule else None
        mine = self._own_request.get(name)
        if idle and mine is not None:  # only idle stop reads it: without one, no API write per request
            try:
                await platform.publish_activity(mine, now, min(30.0, idle / 4))
            except Exception as exc:
                log.warning("deployment %s: cannot publish its last request: %s", name, exc)
        theirs = platform.last_request()
        if theirs is not None and theirs > self._last_request.get(name, float("-inf")):
            self._last_request[name] = theirs
        want = self.desired.get(name)
        # Written by another pod since this one last wrote or took it (by resourceVersion, not by wall clocks).
        # A new gateway pod (a rollout, the HPA) knows only the schedule: what the pods decided wins over it.
        newer = published = platform.news()
        if published is not None:  # dated by this pod's clock: another pod's may be off (idle stop counts from it)
            self._undecided.discard(name)
            published = Desired(published.state, published.reason, now)
        if not platform.leading:
            self._led.discard(name)
            if newer:
                self.desired[name] = published
            return False
        took_over = name not in self._led
        self._led.add(name)
        if newer or took_over:  # another pod's request, or this pod just took the Lease: make it so
            target = published if newer else want
            assert target is not None
            try:
                await self._apply(name, target)
            except Exception as exc:
                log.error("deployment %s: %s", name, self.errors.get(name, exc))
            await self._save()
        return True

    async def set(self, name: str, state: str, reason: str) -> dict[str, Any]:
        """A person's `start` or `stop` (until the next schedule boundary): the desired state, as a dict."""
        if name not in self.platforms:
            raise KeyError(name)
        if not self.managed(name):
            raise NotManaged(f"deployment {name!r} is a server given by URL; modelfleet cannot {state} it")
        if not self.manage and self.primary is not None:
            return await self.primary.set(name, state, reason)
        want = Desired("running" if state == "start" else "stopped", reason, self.clock())
        if self._follows(name):  # the Lease holder applies it (within a tick); this pod shows it meanwhile
            self.desired[name] = want
            self._undecided.discard(name)
            await self.platforms[name].publish(want)  # type: ignore[attr-defined]
            return {"desired": want.state, "reason": want.reason}
        await self._apply(name, want)
        await self._save()
        return {"desired": want.state, "reason": want.reason}

    async def _apply(self, name: str, want: Desired) -> None:
        async with self._lock:
            self.desired[name] = want
            self._undecided.discard(name)
            log.info("deployment %s -> %s: %s", name, want.state, want.reason)
            if want.state == "running":
                try:
                    await self.platforms[name].start()
                except Exception as exc:
                    self.errors[name] = f"start failed: {type(exc).__name__}: {exc}"
                    raise
                self.errors.pop(name, None)
                await self._publish(name, want)
            else:
                self._woken_at.pop(name, None)
                # Published before the stop: a follower that sees it stopped and is woken by a request then
                # writes its wake after this, and it is news; published after, it could erase that wake.
                await self._publish(name, want)
                await self.platforms[name].stop()

    async def _publish(self, name: str, want: Desired) -> None:
        if self._shared(name):  # so the other gateway pods show it, and a new holder resumes it
            try:
                await self.platforms[name].publish(want)  # type: ignore[attr-defined]
            except Exception as exc:
                log.warning("deployment %s: cannot publish its desired state: %s", name, exc)

    async def wake(self, name: str) -> float:
        """A request found `name` stopped: start it (once, however many ask) and say how long to wait.

        Raises Unavailable when the deployment may not be woken now; the message says why.
        """
        dep = self.fleet.deployments[name]
        if not self.manage:
            if self.primary is None:
                raise Unavailable(f"deployment {name!r} is stopped; this gateway worker cannot wake it",
                                  retry_after=5)  # fmt: skip
            wait = await self.primary.wake(name)  # raises Unavailable with the primary's reason
            if all(r.state is ReplicaState.STOPPED for r in self.replicas[name]):
                self.registry.mark_all(name, ReplicaState.STARTING, "woken by a request (through the primary)")
            return wait
        if not dep.wake_on_request or not self.managed(name):
            want = self.desired.get(name)
            why = f" ({want.reason})" if want else ""
            raise Unavailable(f"deployment {name!r} is stopped{why}; wake_on_request is off", retry_after=60)
        now = self.clock()
        off = schedules.in_off_hours(dep.schedule, now)
        if off is not None and dep.schedule is not None and not dep.schedule.wake_off_hours:
            until = f" until {off.until:%a %H:%M %Z}" if off.until else ""
            raise Unavailable(
                f"deployment {name!r} is stopped by its schedule{until} ({off.reason}); "
                "schedule.wake_off_hours is false, so requests do not wake it",
                retry_after=max(1.0, off.until.timestamp() - now) if off.until else 60,
            )
        if not all(r.state is ReplicaState.STOPPED for r in self.replicas[name]):
            return dep.wake_timeout  # already on its way (a worker that had not seen it yet)
        if self._follows(name):  # ask the Lease holder; hold this request until it has scaled the Deployment
            task = self._waking.get(name)
            if task is None:
                self.wakes.count[name] = self.wakes.count.get(name, 0) + 1
                task = self._waking[name] = spawn(self._wake_via_holder(name, now), f"wake of deployment {name}",
                                                  logger=log)  # fmt: skip
            await asyncio.shield(task)
            return dep.wake_timeout
        if name not in self._waking:  # one wake in flight, however many ask; a stopped one is woken again
            self._woken_at[name] = time.monotonic()
            self.wakes.count[name] = self.wakes.count.get(name, 0) + 1
            log.info("deployment %s: woken by a request", name)
            # Starting from this moment, so the request queues for a replica instead of failing fast.
            self.registry.mark_all(name, ReplicaState.STARTING, "woken by a request")
            self._waking[name] = spawn(self._wake(name, now), f"wake of deployment {name}", logger=log)
        return dep.wake_timeout

    async def wake_started(self, name: str) -> float:
        """The primary's side of a worker's wake: wake, and return once the platform was asked to start."""
        wait = await self.wake(name)
        task = self._waking.get(name)
        if task is not None:
            await asyncio.shield(task)
        if name in self.errors and all(r.state is ReplicaState.STOPPED for r in self.replicas[name]):
            raise Unavailable(f"deployment {name!r} could not be woken: {self.errors[name]}", retry_after=5)
        return wait

    async def _wake(self, name: str, now: float) -> None:
        before = self.desired.get(name)
        try:
            await self._apply(name, Desired("running", "woken by a request", now))
        except Exception as exc:
            # Stopped again, saying why, so waiting requests fail now and the next request tries again.
            self._woken_at.pop(name, None)
            self.wakes.failed[name] = self.wakes.failed.get(name, 0) + 1
            if before is not None:
                self.desired[name] = before
            log.error("deployment %s: the wake failed (the next request tries again): %s: %s", name,
                      type(exc).__name__, exc)  # fmt: skip
            self.registry.mark_all(name, ReplicaState.STOPPED, f"wake failed ({self.errors.get(name, exc)}); "
                                   "the next request tries again")  # fmt: skip
        finally:
            self._waking.pop(name, None)

    async def _wake_via_holder(self, name: str, now: float) -> None:
        platform: Any = self.platforms[name]
        try:
            log.info("deployment %s: woken by a request; asking the gateway pod holding its Lease", name)
            want = Desired("running", "woken by a request", now)
            self.desired[name] = want
            self._undecided.discard(name)
            await platform.publish(want)
            wait = min(self.fleet.deployments[name].wake_timeout, platform.lease.duration + 2 * TICK + 5)
            if not await platform.scaled_up(wait):
                self.wakes.failed[name] = self.wakes.failed.get(name, 0) + 1
                raise Unavailable(f"deployment {name!r} is stopped and the gateway pod holding its Lease did not "
                                  f"start it within {wait:g}s", retry_after=5)  # fmt: skip
        finally:
            self._waking.pop(name, None)

    def replica_changed(self, replica: Replica) -> None:
        """Told by the platforms: a woken deployment that turns ready ends its wake."""
        started = self._woken_at.get(replica.deployment)
        if started is not None and replica.state is ReplicaState.READY:
            del self._woken_at[replica.deployment]
            self.wakes.seconds.setdefault(replica.deployment, []).append(time.monotonic() - started)

    async def status(self) -> list[dict[str, Any]]:
        if not self.manage and self.primary is not None:
            return await self.primary.status()
        out = []
        for name, dep in self.fleet.deployments.items():
            want = self.desired.get(name)
            w = schedules.window(dep.schedule, self.clock())
            until = w.until.isoformat() if w.until else None
            out.append({
                "name": name, "kind": dep.kind, "managed": self.managed(name),
                "desired": want.state if want else "running", "reason": want.reason if want else "not managed",
                "observed": observed(self.replicas[name]),
                "replicas": [{"name": r.name, "state": r.state.value, "reason": r.reason} for r in self.replicas[name]],
                "schedule": None if w.state is None else {"window": w.state, "until": until},
                "wake_on_request": dep.wake_on_request, "wakes": self.wakes.count.get(name, 0),
                "error": self.errors.get(name),
            })  # fmt: skip
        return out

    async def _load(self) -> dict[str, tuple[Desired, float]]:
        if self.store is None:
            return {}
        try:
            await self.store.init()
            rows = await self.store.deployment_states()
            return {n: (Desired(d, r, since), checked) for n, (d, r, since, checked) in rows.items()}  # type: ignore[arg-type]
        except Exception as exc:
            log.error("cannot read deployment states from the store (%s); using the schedules", exc)
            return {}

    async def _save(self) -> None:
        if self.store is None:
            return
        try:
            await self.store.init()
            for name, want in self.desired.items():
                await self.store.put_deployment_state(
                    name, want.state, want.reason, want.since, observed(self.replicas[name]), self._last_checked
                )
        except Exception as exc:
            log.error("cannot save deployment states to the store: %s", exc)
