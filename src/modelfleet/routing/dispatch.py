"""Deployment -> replica: least in-flight among ready replicas, behind a bounded FIFO queue.

When every ready replica is at `max_concurrency`, requests wait in arrival order (fair) for the
next free slot; when `max_queue` are already waiting, the next one is refused at once so a
client can retry elsewhere instead of timing out here.
"""

from __future__ import annotations

import asyncio
from collections import deque

from modelfleet.errors import Unavailable
from modelfleet.types import Replica


class Dispatcher:
    __slots__ = ("_rr", "_waiters", "deployment", "max_concurrency", "max_queue", "replicas")

    def __init__(
        self, deployment: str, replicas: list[Replica], *, max_concurrency: int | None, max_queue: int
    ) -> None:
        self.deployment = deployment
        self.replicas = replicas  # shared with the control plane, which updates states in place
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._waiters: deque[asyncio.Future[Replica]] = deque()
        self._rr = 0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _free_replica(self) -> Replica | None:
        best: Replica | None = None
        cap = self.max_concurrency
        n = len(self.replicas)
        # Rotate the scan start so equally idle replicas share the load.
        self._rr = (self._rr + 1) % n if n else 0
        for i in range(n):
            r = self.replicas[(self._rr + i) % n]
            free = r.state == "ready" and (cap is None or r.inflight < cap)
            if free and (best is None or r.inflight < best.inflight):
                best = r
                if r.inflight == 0:
                    break
        return best

    async def acquire(self, timeout: float) -> Replica:
        if not self._waiters:
            replica = self._free_replica()
            if replica is not None:
                replica.inflight += 1
                return replica
        if not any(r.ready or r.state == "starting" for r in self.replicas):
            raise self._no_ready_replica()  # nothing will free up: fail fast rather than time out
        if len(self._waiters) >= self.max_queue:
            raise Unavailable(
                f"deployment {self.deployment!r} is at capacity: every replica is busy and "
                f"{self.max_queue} requests are already queued; retry shortly",
                code="deployment_overloaded",
            )
        waiter: asyncio.Future[Replica] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())  # granted just as we gave up: hand the slot on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    f"deployment {self.deployment!r} had no free replica within {timeout:g}s; retry shortly",
                    code="deployment_overloaded",
                ) from None
            raise

    def release(self, replica: Replica) -> None:
        replica.inflight -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters in arrival order (also called when a replica turns ready)."""
        while self._waiters:
            replica = self._free_replica()
            if replica is None:
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            replica.inflight += 1
            waiter.set_result(replica)

    def fail_waiters(self) -> None:
        """No replica is ready or starting: tell the queue now rather than letting it time out."""
        if any(r.ready or r.state == "starting" for r in self.replicas):
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._no_ready_replica())

    def _no_ready_replica(self) -> Unavailable:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in self.replicas) or "no replicas"
        return Unavailable(f"deployment {self.deployment!r} has no ready replica ({reasons})", retry_after=5)
