"""Deployment lifecycle: what should run (desired), deciding it from schedules, people and requests,
and acting on the platforms. The only place that starts or stops a deployment.

    desired <- schedule boundaries, idle stop (schedules.py), `deployments start|stop`, wake-on-request
    act     -> platform.start() / platform.stop()
    observe <- the replicas' states (written by the platforms and health checks)

Desired state is kept in the store, so a restarted gateway resumes what it was told (and applies any
schedule boundary that passed while it was down). Time comes from `clock`, so tests drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from modelfleet.config import Fleet
from modelfleet.control import schedules
from modelfleet.control.platforms.base import NotManaged, Platform
from modelfleet.control.schedules import Desired
from modelfleet.errors import Unavailable
from modelfleet.state.store import Store
from modelfleet.types import Replica, ReplicaState

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


class Deployments:
    def __init__(
        self,
        fleet: Fleet,
        platforms: dict[str, Platform],
        replicas: dict[str, list[Replica]],
        store: Store | None,
        clock: Callable[[], float] = time.time,
        *,
        manage: bool = True,
    ) -> None:
        self.fleet = fleet
        self.manage = manage  # False in extra gateway workers: the primary decides, they only watch
        self.platforms = platforms
        self.replicas = replicas
        self.store = store
        self.clock = clock
        self.desired: dict[str, Desired] = {}
        self.wakes = WakeStats()
        self._woken_at: dict[str, float] = {}
        self._last_checked = clock()
        self._last_request: dict[str, float] = {}
        self._seen_requests: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def managed(self, name: str) -> bool:
        return self.platforms[name].managed

    async def start(self) -> None:
        """Resume what the store remembers (or what schedules say), then start what should run."""
        if not self.manage:
            for platform in self.platforms.values():
                await platform.watch()
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
            else:
                desired, checked = was
                self.desired[name] = schedules.decide(
                    schedule=dep.schedule, idle_stop_after=None, desired=desired, last_checked=checked,
                    last_request=None, now=now,
                )  # fmt: skip
        for name, want in self.desired.items():
            if want.state == "running":
                await self.platforms[name].start()
            else:
                await self.platforms[name].stop()
                log.info("deployment %s stays stopped: %s", name, want.reason)
        self._last_checked = now
        await self._save()
        self._task = asyncio.create_task(self._run(), name="deployments")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._save()
        for platform in self.platforms.values():
            await platform.shutdown()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.tick()
            except Exception:
                log.exception("deployment lifecycle tick failed")

    async def tick(self) -> None:
        """Let time pass: schedule boundaries and idle stops."""
        now = self.clock()
        for name, reps in self.replicas.items():  # a request since the last tick counts as activity
            n = sum(r.requests for r in reps)
            if n != self._seen_requests.get(name, 0):
                self._seen_requests[name] = n
                self._last_request[name] = now
        changed = False
        for name, want in list(self.desired.items()):
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

    async def set(self, name: str, state: str, reason: str) -> Desired:
        """A person's `start` or `stop` (until the next schedule boundary)."""
        if name not in self.platforms:
            raise KeyError(name)
        if not self.managed(name):
            raise NotManaged(f"deployment {name!r} is a server given by URL; modelfleet cannot {state} it")
        want = Desired("running" if state == "start" else "stopped", reason, self.clock())
        await self._apply(name, want)
        await self._save()
        return want

    async def _apply(self, name: str, want: Desired) -> None:
        async with self._lock:
            self.desired[name] = want
            log.info("deployment %s -> %s: %s", name, want.state, want.reason)
            if want.state == "running":
                await self.platforms[name].start()
            else:
                self._woken_at.pop(name, None)
                await self.platforms[name].stop()

    def wake(self, name: str) -> float:
        if not self.manage:
            raise Unavailable(f"deployment {name!r} is stopped; this gateway worker cannot wake it", retry_after=5)
        """A request found `name` stopped: start it (once, however many ask) and say how long to wait.

        Raises Unavailable when the deployment may not be woken now; the message says why.
        """
        dep = self.fleet.deployments[name]
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
        if name not in self._woken_at:
            self._woken_at[name] = time.monotonic()
            self.wakes.count[name] = self.wakes.count.get(name, 0) + 1
            log.info("deployment %s: woken by a request", name)
            # Starting from this moment, so the request queues for a replica instead of failing fast.
            for r in self.replicas[name]:
                r.mark(ReplicaState.STARTING, "woken by a request")
            task = asyncio.get_running_loop().create_task(
                self._apply(name, Desired("running", "woken by a request", now))
            )
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return dep.wake_timeout

    def replica_changed(self, replica: Replica) -> None:
        """Told by the platforms: a woken deployment that turns ready ends its wake."""
        started = self._woken_at.get(replica.deployment)
        if started is not None and replica.state is ReplicaState.READY:
            del self._woken_at[replica.deployment]
            self.wakes.seconds.setdefault(replica.deployment, []).append(time.monotonic() - started)

    def status(self) -> list[dict[str, Any]]:
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
