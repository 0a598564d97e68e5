"""Supervised background work (background.py): no loop dies silently, and stop() really stops it."""

from __future__ import annotations

import asyncio
import logging

from modelfleet.background import Periodic, spawn


def test_a_periodic_loop_outlives_errors_hung_steps_and_stray_cancellations_then_stops(caplog):
    async def main() -> None:
        calls: list[str] = []
        script = ["error", "cancel", "hang", "ok", "ok"]

        async def step() -> None:
            what = script[len(calls)] if len(calls) < len(script) else "ok"
            calls.append(what)
            if what == "error":
                raise RuntimeError("the store said no")
            if what == "cancel":  # e.g. a library cancelling its own inner task and letting it escape
                raise asyncio.CancelledError()
            if what == "hang":
                await asyncio.sleep(60)

        loop = Periodic("test loop", 0.01, step)
        loop.step_timeout = 0.1
        loop.start()
        for _ in range(300):
            if len(calls) >= 5:
                break
            await asyncio.sleep(0.01)
        assert calls[:5] == script and loop.running and loop.failures == 0  # healed after three bad steps
        await loop.stop()
        assert not loop.running
        stopped_at = len(calls)
        await asyncio.sleep(0.1)
        assert len(calls) == stopped_at

    with caplog.at_level(logging.INFO, logger="modelfleet"):
        asyncio.run(main())
    text = caplog.text
    assert "test loop failed (1 in a row" in text and "RuntimeError: the store said no" in text
    assert "test loop failed (2 in a row" in text and "CancelledError" in text
    assert "test loop failed (3 in a row" in text and "TimeoutError" in text
    assert "test loop works again after 3 failure(s)" in text


def test_spawned_work_that_fails_is_logged_with_its_name(caplog):
    async def main() -> None:
        async def boom() -> None:
            raise ValueError("no such deployment")

        task = spawn(boom(), "start deployment x")
        await asyncio.sleep(0.05)
        assert task.done()

    with caplog.at_level(logging.ERROR, logger="modelfleet"):
        asyncio.run(main())
    assert "start deployment x failed: ValueError: no such deployment" in caplog.text
