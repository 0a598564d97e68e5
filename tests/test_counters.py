"""Limit arithmetic of the in-process counters (the Redis script does the same; test_shared_state runs it)."""

from __future__ import annotations

import asyncio

import pytest

from modelfleet.access.admin import since_day
from modelfleet.config.schema import Limits
from modelfleet.errors import InvalidRequest
from modelfleet.state.counters import LocalCounters, _Window, periods


def run(coro):
    return asyncio.run(coro)


def test_a_minute_window_forgets_what_is_older_than_60_seconds():
    w = _Window()
    w.add(100, 3)
    w.add(130, 2)
    w.trim(159)
    assert w.total == 5
    w.trim(160)  # second 100 leaves the window
    assert w.total == 2
    assert w.retry_after(160.5) == pytest.approx(29.5)
    w.adjust(130, -1)
    assert w.total == 1


def test_admit_checks_every_limit_before_counting_any():
    async def main():
        c = LocalCounters()
        limits = Limits(rpm=10, tokens_per_day=100)
        first = await c.admit("t", limits, 60, "r1")
        assert first.ok and first.remaining_requests == 9 and first.remaining_tokens == 40
        refused = await c.admit("t", limits, 60, "r2")
        assert not refused.ok and refused.limit == "tokens_per_day"
        # The refused request counted nothing: the next one sees 9 requests left, not 8.
        c.settle("t", limits, first, 30)  # it used 30 of the 60 reserved
        again = await c.admit("t", limits, 60, "r3")
        assert again.ok and again.remaining_requests == 8 and again.remaining_tokens == 10

    run(main())


def test_concurrency_is_released_by_settle():
    async def main():
        c = LocalCounters()
        limits = Limits(concurrency=1)
        held = await c.admit("t", limits, 0, "a")
        assert held.ok
        assert (await c.admit("t", limits, 0, "b")).limit == "concurrency"
        c.settle("t", limits, held, 0)
        assert (await c.admit("t", limits, 0, "c")).ok

    run(main())


def test_seeded_budgets_count_what_was_spent_before_a_restart():
    async def main():
        c = LocalCounters()
        await c.seed("t", 90, 500)
        v = await c.admit("t", Limits(tokens_per_day=100, tokens_per_month=1000), 20, "x")
        assert not v.ok and v.limit == "tokens_per_day" and v.remaining_tokens == 10

    run(main())


def test_periods_and_since():
    day, month, day_left, month_left = periods(1_795_392_000.0)  # 2026-11-23T00:00:00Z
    assert (day, month) == ("2026-11-23", "2026-11")
    assert day_left == 86400 and month_left == 8 * 86400
    assert since_day("1d", 1_795_392_000.0) == "2026-11-23"
    assert since_day("7d", 1_795_392_000.0) == "2026-11-17"
    assert since_day("2026-11-01") == "2026-11-01"
    with pytest.raises(InvalidRequest, match="expected a span"):
        since_day("last week")


def test_a_refused_redis_password_leaves_no_connection_behind() -> None:
    """A Redis that refuses AUTH: every call fails with its answer, and each try's connection is closed."""
    from modelfleet.state.resp import RedisConnection, RedisError

    async def scenario() -> tuple[int, int]:
        opened, open_now = 0, set()

        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal opened
            opened += 1
            open_now.add(writer)
            while await reader.read(4096):
                writer.write(b"-WRONGPASS invalid username-password pair\r\n")
            open_now.discard(writer)
            writer.close()

        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = RedisConnection(f"redis://:wrong@127.0.0.1:{port}/0")
        for _ in range(5):
            with pytest.raises(RedisError, match="WRONGPASS"):
                await conn.call("PING")
        await asyncio.sleep(0.2)
        server.close()
        return opened, len(open_now)

    opened, still_open = asyncio.run(scenario())
    assert opened == 5 and still_open == 0
