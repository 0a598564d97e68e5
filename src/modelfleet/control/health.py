"""Replica health: active checks with thresholds, and passive ejection on failed requests.

    ready --(unhealthy_after failed checks)--> unhealthy --(healthy_after passed checks)--> ready
    ready --(eject_after failed requests in a row)--> ejected for eject_for --(a passed check)--> ready

The gateway reports failed requests (connect errors, 5xx, timeouts) through `request_failed`; the
decision to take a replica out, and to bring it back, is made here. A replica an engine supervisor
is (re)starting is left to the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from modelfleet.config.schema import Health
from modelfleet.types import Replica, ReplicaState

log = logging.getLogger("modelfleet.control")


class Prober(Protocol):
    """What a health check needs: an HTTP backend for servers, the endpoint itself for SageMaker."""

    async def probe(self, replica: Replica, timeout: float, path: str = "/models") -> str | None: ...
    async def aclose(self) -> None: ...


class HealthChecker:
    def __init__(
        self,
        replicas: list[Replica],
        settings: Health,
        backend: Prober,
        changed: Callable[[Replica], None],
        *,
        active: bool = True,
    ) -> None:
        self.replicas = replicas
        self.settings = settings
        self.backend = backend
        self.changed = changed
        self.active = active  # False for engines: only ejected replicas are checked
        self._passed = {id(r): 0 for r in replicas}
        self._failed = {id(r): 0 for r in replicas}
        self._ejected_until: dict[int, float] = {}

    def _mark(self, replica: Replica, state: ReplicaState, reason: str = "") -> None:
        if state is ReplicaState.READY:
            log.info("replica %s (%s) is ready", replica.name, replica.url)
        else:
            log.warning("replica %s (%s) is %s: %s", replica.name, replica.url, state.value, reason)
        replica.mark(state, reason)
        self.changed(replica)

    def request_failed(self, replica: Replica, reason: str) -> None:
        """Called by the gateway after `replica.failures` was counted up."""
        s = self.settings
        if replica.failures >= s.eject_after and replica.state is ReplicaState.READY:
            self._ejected_until[id(replica)] = time.monotonic() + s.eject_for
            self._passed[id(replica)] = 0
            self._mark(replica, ReplicaState.UNHEALTHY,
                      f"ejected after {replica.failures} failed requests in a row (last: {reason}); "
                      f"checked again in {s.eject_for:g}s")  # fmt: skip
            replica.failures = 0
            asyncio.get_running_loop().call_later(s.eject_for, self._spawn_check, replica)

    def _spawn_check(self, replica: Replica) -> None:
        task = asyncio.get_running_loop().create_task(self.check(replica))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def check(self, replica: Replica) -> None:
        if replica.state in (ReplicaState.STARTING, ReplicaState.STOPPED) or not replica.url:
            return  # a supervisor owns it now
        if time.monotonic() < self._ejected_until.get(id(replica), 0.0):
            return
        s = self.settings
        reason = await self.backend.probe(replica, s.timeout, s.path)
        key = id(replica)
        if reason is None:
            self._failed[key] = 0
            self._passed[key] += 1
            if replica.state is not ReplicaState.READY and self._passed[key] >= s.healthy_after:
                self._ejected_until.pop(key, None)
                self._mark(replica, ReplicaState.READY)
        else:
            self._passed[key] = 0
            self._failed[key] += 1
            ejected = key in self._ejected_until
            if ejected:  # still failing after its cool-down: out for another one
                self._ejected_until[key] = time.monotonic() + s.eject_for
                replica.mark(ReplicaState.UNHEALTHY, f"ejected; its health check still fails: {reason}")
                asyncio.get_running_loop().call_later(s.eject_for, self._spawn_check, replica)
            elif replica.state is ReplicaState.READY and self._failed[key] >= s.unhealthy_after:
                self._mark(replica, ReplicaState.UNHEALTHY, reason)
            elif replica.state is ReplicaState.UNHEALTHY and reason != replica.reason:
                replica.mark(ReplicaState.UNHEALTHY, reason)

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(r) for r in self.replicas))

    async def first_check(self) -> None:
        """At start-up one answer decides, either way: no reason to wait for thresholds."""

        async def one(replica: Replica) -> None:
            reason = await self.backend.probe(replica, self.settings.timeout, self.settings.path)
            self._mark(replica, ReplicaState.READY if reason is None else ReplicaState.UNHEALTHY, reason or "")

        await asyncio.gather(*(one(r) for r in self.replicas))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            if self.active:
                await self.check_all()
