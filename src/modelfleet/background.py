"""Supervised background work: every periodic loop of the gateway runs as a `Periodic`.

A step that fails is logged with the loop's name (with its traceback the first time), the loop backs
off and keeps running, and it says when it recovers; nothing dies silently. `stop()` cancels it and
waits. `spawn` runs one-off work (a wake, a delayed health check) whose failure is logged, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("modelfleet")

_MAX_BACKOFF = 60.0


class Reported(Exception):
    """A step's failure that the step has already logged in its own words: back off, log nothing more."""


_running: set[asyncio.Task[Any]] = set()  # spawned tasks, kept alive until they finish


class Periodic:
    def __init__(
        self,
        name: str,
        interval: float,
        step: Callable[[], Awaitable[object]],
        *,
        logger: logging.Logger = log,
        max_backoff: float = _MAX_BACKOFF,
    ) -> None:
        self.name = name
        self.interval = interval
        self.max_backoff = max_backoff  # the longest wait between failed steps
        self.step = step
        self.step_timeout = max(30.0, 10 * interval)  # a step that hangs (a store that never answers) fails
        self.log = logger
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self.name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # Python 3.11's wait_for can swallow a cancel that lands just as the step finishes (gh-86296), and
        # the loop would then go on forever: cancel until it has ended.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _delay(self) -> float:
        if not self.failures:
            return self.interval
        return min(max(self.interval, self.max_backoff), self.interval * 2 ** min(self.failures, 16))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._delay())
            try:
                await asyncio.wait_for(self.step(), self.step_timeout)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # stop(), or the loop shutting down: the loop ends
                self._failed(exc)  # a cancellation raised inside the step (not ours): a failed step
            except Exception as exc:
                self._failed(exc)
            else:
                if self.failures:
                    self.log.info("%s works again after %d failure(s)", self.name, self.failures)
                self.failures = 0

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if not isinstance(exc, Reported):
            self.log.error("%s failed (%d in a row; next try in %.3gs): %s: %s", self.name, self.failures,
                           self._delay(), type(exc).__name__, exc, exc_info=self.failures == 1)  # fmt: skip


def spawn(coro: Coroutine[Any, Any, object], name: str, *, logger: logging.Logger = log) -> asyncio.Task[Any]:
    """Run one-off work in the background; a failure is logged with `name`."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _running.discard(t)
        if not t.cancelled() and (exc := t.exception()) is not None:
            logger.error("%s failed: %s: %s", name, type(exc).__name__, exc, exc_info=exc)

    task.add_done_callback(done)
    return task
