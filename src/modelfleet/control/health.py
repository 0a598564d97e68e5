"""Replica health: active checks with thresholds, and passive ejection on failed requests.

    ready --(unhealthy_after failed checks)--> unhealthy --(healthy_after passed checks)--> ready
    ready --(eject_after failed requests in a row)--> ejected for eject_for --(a passed check)--> ready

Routing counts a replica's failed requests in a row and reports each one through `request_failed`;
the decision to take a replica out, and to bring it back, is made here and carried out by the
registry. A replica a platform is (re)starting or has stopped is left to the platform.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from modelfleet.background import Periodic, spawn
from modelfleet.config.schema import Health
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.values import Replica, ReplicaState


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
        registry: ReplicaRegistry,
        *,
        active: bool = True,
    ) -> None:
        self.replicas = replicas
        self.settings = settings
        self.backend = backend
        self.registry = registry
        self.active = active  # False for engines and endpoints: only ejected replicas are checked
        self._passed = {id(r): 0 for r in replicas}
        self._failed = {id(r): 0 for r in replicas}
        self.loop = Periodic(f"health checks of {replicas[0].deployment}", settings.interval, self.check_all)

    def request_failed(self, replica: Replica, reason: str, in_a_row: int) -> bool:
        """A request failed on `replica` (the `in_a_row`-th in a row); True when that ejects it."""
        s = self.settings
        if in_a_row < s.eject_after or replica.state is not ReplicaState.READY:
            return False
        self._passed[id(replica)] = 0
        self.registry.eject(replica, f"ejected after {in_a_row} failed requests in a row "
                            f"(last: {reason}); checked again in {s.eject_for:g}s")  # fmt: skip
        asyncio.get_running_loop().call_later(s.eject_for, self._check_later, replica)
        return True

    def _check_later(self, replica: Replica) -> None:
        spawn(self.check(replica, cooled=True), f"health check of ejected replica {replica.name}")

    async def check(self, replica: Replica, *, cooled: bool = False) -> None:
        """One check; an ejected replica is checked only once its cool-down is over (`cooled`)."""
        if replica.state in (ReplicaState.STARTING, ReplicaState.STOPPED) or not replica.url:
            return  # its platform owns it now
        ejected = self.registry.ejected(replica)
        if (ejected and not cooled) or (not self.active and not ejected):
            return
        s = self.settings
        reason = await self.backend.probe(replica, s.timeout, s.path)
        key = id(replica)
        if reason is None:
            self._failed[key] = 0
            self._passed[key] += 1
            if replica.state is not ReplicaState.READY and self._passed[key] >= s.healthy_after:
                self.registry.readmit(replica)
            elif ejected:  # passing, not yet healthy_after times: check it again soon, not never
                asyncio.get_running_loop().call_later(min(s.eject_for, s.interval), self._check_later, replica)
        else:
            self._passed[key] = 0
            self._failed[key] += 1
            if ejected:  # still failing after its cool-down: out for another one
                self.registry.eject(replica, f"ejected; its health check still fails: {reason}")
                asyncio.get_running_loop().call_later(s.eject_for, self._check_later, replica)
            elif (
                replica.state is ReplicaState.READY and self._failed[key] >= s.unhealthy_after
            ) or replica.state is ReplicaState.UNHEALTHY:
                self.registry.mark(replica, ReplicaState.UNHEALTHY, reason)

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(r) for r in self.replicas))

    async def first_check(self) -> None:
        """At start-up one answer decides, either way: no reason to wait for thresholds."""

        async def one(replica: Replica) -> None:
            reason = await self.backend.probe(replica, self.settings.timeout, self.settings.path)
            self.registry.mark(replica, ReplicaState.READY if reason is None else ReplicaState.UNHEALTHY, reason or "")

        await asyncio.gather(*(one(r) for r in self.replicas))
