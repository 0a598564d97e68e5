"""Shutdown keeps its word: every request gets an answer, and the process is gone by `drain_timeout`.

From SIGTERM on, a request that arrives (on a connection that was already open) is answered 503
`shutting_down` with Retry-After at once, and every answer closes its connection. Requests under way
are let finish until the deadline; there, streams end with an error event (proxy.end_streams) and
every request whose answer has not begun (queued for a replica, or waiting for a JSON reply) is
cut and answered 503 `shutting_down`, instead of aiohttp's cancellation closing it with no answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from modelfleet.errors import Unavailable

log = logging.getLogger("modelfleet")

# Set on a request whose answer has begun (a stream's headers): at the deadline it ends on its own.
ANSWERING = web.RequestKey("answering", bool)
_GRACE = 0.25  # for the cut requests and the ended streams to write their last bytes


def shutting_down(why: str) -> Unavailable:
    return Unavailable(f"the gateway is shutting down and {why}; retry the request", retry_after=1,
                       code="shutting_down")  # fmt: skip


class Drain:
    __slots__ = ("_cut", "_idle", "_running", "draining")

    def __init__(self) -> None:
        self.draining = False
        self._running: dict[asyncio.Task, web.Request] = {}  # the handlers under way
        self._cut: set[asyncio.Task] = set()
        self._idle: asyncio.Event | None = None

    def enter(self, request: web.Request) -> asyncio.Task | None:
        task = asyncio.current_task()
        if task is not None:
            self._running[task] = request
        return task

    def leave(self, task: asyncio.Task | None) -> None:
        self._running.pop(task, None)  # type: ignore[arg-type]
        if self._idle is not None and not self._running:
            self._idle.set()

    def was_cut(self, task: asyncio.Task | None) -> bool:
        """The handler's cancellation came from the deadline (then it is answered), not from the client."""
        if task is None or task not in self._cut:
            return False
        self._cut.discard(task)
        task.uncancel()
        return True

    def begin(self) -> None:
        """From now on, a request that arrives is answered 503 shutting_down, and every answer closes its connection."""
        self.draining = True

    async def settle(self, timeout: float, at_deadline: Callable[[], None]) -> None:
        """Wait for the requests under way, for up to `timeout` seconds in all; at the deadline, end them."""
        self.begin()
        self._idle = asyncio.Event()
        if not self._running:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout - _GRACE))
            return
        except TimeoutError:
            pass
        at_deadline()  # streams end with an error event
        # Newest first: a queued request is gone before an older one's slot is freed and handed to it.
        # A second round for a cancellation Python 3.11's wait_for swallowed as its result arrived.
        for _ in range(2):
            for task, request in reversed(list(self._running.items())):
                if not request.get(ANSWERING) and not task.done():
                    self._cut.add(task)
                    task.cancel()
            try:
                await asyncio.wait_for(self._idle.wait(), _GRACE / 2)
                return
            except TimeoutError:
                pass
        log.warning("%d request(s) still running at the drain deadline; closing their connections",
                    len(self._running))  # fmt: skip
