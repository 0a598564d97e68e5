"""Deployment -> replica: the less loaded of two ready replicas, behind a bounded FIFO queue.

Power of two choices: sample two free replicas and take the one with fewer requests in flight
(plus, where the deployment scrapes engine metrics, the engine's own queue and KV-cache use).
It spreads load almost as well as scanning for the least loaded, without herding every gateway
onto the same replica. A reading older than `stale_after` is unknown, never idle: such a replica
loses to any replica with a fresh reading.

When every ready replica is at `max_concurrency`, requests wait in arrival order (fair) for the
next free slot; when `max_queue` are already waiting, the next one is refused at once so a
client can retry elsewhere instead of timing out here.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Collection

from modelfleet.errors import Unavailable
from modelfleet.values import Replica, ReplicaState

_READY = ReplicaState.READY
_UNKNOWN_LOAD = 1e9


class Dispatcher:
    __slots__ = (
        "_excluded", "_rr", "_waiters", "deployment", "max_concurrency", "max_queue", "replicas", "stale_after",
    )  # fmt: skip

    def __init__(
        self,
        deployment: str,
        replicas: list[Replica],
        *,
        max_concurrency: int | None,
        max_queue: int,
        stale_after: float | None = None,
    ) -> None:
        self.deployment = deployment
        self.replicas = replicas  # the registry's: the control plane changes their states in place
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.stale_after = stale_after  # set when engine metrics are scraped
        self._waiters: deque[asyncio.Future[Replica]] = deque()
        # Waiters that must not get some replicas (those that already failed their request): few, so apart.
        self._excluded: dict[asyncio.Future[Replica], Collection[Replica]] = {}
        self._rr = 0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _score(self, r: Replica, now: float) -> float:
        if self.stale_after is None:
            return r.traffic.inflight
        if now - r.load_at > self.stale_after:
            return _UNKNOWN_LOAD + r.traffic.inflight
        return r.traffic.inflight + r.load

    def _free_replica(self, exclude: Collection[Replica] = ()) -> Replica | None:
        cap = self.max_concurrency
        free = [
            r for r in self.replicas
            if r.state is _READY and (cap is None or r.traffic.inflight < cap) and r not in exclude
        ]  # fmt: skip
        n = len(free)
        if n <= 1:
            return free[0] if free else None
        if n == 2:
            a, b = free
        else:
            i = random.randrange(n)
            a, b = free[i], free[(i + random.randrange(1, n)) % n]
        now = time.monotonic() if self.stale_after is not None else 0.0
        sa, sb = self._score(a, now), self._score(b, now)
        if sa == sb:  # alternate on ties, so equally idle replicas share the load
            self._rr ^= 1
            return a if self._rr else b
        return a if sa < sb else b

    def stopped(self) -> bool:
        """Every replica is stopped: the deployment is off (and may be woken)."""
        for r in self.replicas:  # a loop, not all(): this runs on every request
            if r.state != "stopped":
                return False
        return bool(self.replicas)

    async def acquire(self, timeout: float, exclude: Collection[Replica] = (), wait_starting: bool = True) -> Replica:
        """A replica with a free slot; `exclude` names replicas that already failed this request.

        Without `wait_starting`, a deployment with no ready replica fails at once even if one is
        starting, so the caller can fail over (or, in strict mode, say so) instead of waiting.
        """
        if not self._waiters:
            replica = self._free_replica(exclude)
            if replica is not None:
                t = replica.traffic
                t.inflight += 1
                t.requests += 1
                return replica
        alive = [r for r in self.replicas if r not in exclude]
        if not any(r.state is _READY or (wait_starting and r.state == "starting") for r in alive):
            raise self._no_ready_replica()  # nothing will free up: fail fast rather than time out
        if len(self._waiters) >= self.max_queue:
            raise Unavailable(
                f"deployment {self.deployment!r} is at capacity: every replica is busy and "
                f"{self.max_queue} requests are already queued; retry shortly",
                code="deployment_overloaded",
            )
        waiter: asyncio.Future[Replica] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if exclude:
            self._excluded[waiter] = exclude
        try:
            return await asyncio.wait_for(waiter, timeout)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())  # granted just as we gave up: hand the slot on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            self._excluded.pop(waiter, None)
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    f"deployment {self.deployment!r} had no free replica within {timeout:g}s; retry shortly",
                    code="deployment_overloaded",
                ) from None
            raise

    def release(self, replica: Replica) -> None:
        replica.traffic.inflight -= 1
        self.hand_on()

    def hand_on(self) -> None:
        """Hand free slots to waiters in arrival order (also called when a replica changes state)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            exclude = self._excluded.get(waiter, ())
            replica = self._free_replica(exclude)
            if replica is not None:
                waiters.popleft()
            elif not exclude:
                return  # nothing is free
            else:  # the head may not take what is free (it failed there): someone behind it may
                found = self._another()
                if found is None:
                    return
                waiter, replica = found
                waiters.remove(waiter)
            self._excluded.pop(waiter, None)
            t = replica.traffic
            t.inflight += 1
            t.requests += 1
            waiter.set_result(replica)

    def _another(self) -> tuple[asyncio.Future[Replica], Replica] | None:
        for waiter in self._waiters:
            if not waiter.done():
                replica = self._free_replica(self._excluded.get(waiter, ()))
                if replica is not None:
                    return waiter, replica
        return None

    def fail_waiters(self) -> None:
        """No replica is ready or starting: tell the queue now rather than letting it time out."""
        if any(r.ready or r.state == "starting" for r in self.replicas):
            return
        self._excluded.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._no_ready_replica())

    def _no_ready_replica(self) -> Unavailable:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in self.replicas) or "no replicas"
        return Unavailable(f"deployment {self.deployment!r} has no ready replica ({reasons})", retry_after=5)
