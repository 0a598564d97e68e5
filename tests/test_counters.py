"""Limit arithmetic of the in-process counters (the Redis script does the same; test_shared_state runs it)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import uuid

import pytest

from modelfleet.access.admin import since_day
from modelfleet.config.schema import Limits
from modelfleet.errors import InvalidRequest, Unavailable
from modelfleet.state.counters import LIMITS, LocalCounters, Verdict, _Window, periods
from modelfleet.state.redis_counters import BATCH, RedisCounters
from modelfleet.state.resp import RedisError


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
    from modelfleet.state.resp import RedisConnection

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


def _shape(v: Verdict) -> tuple:
    """What both counters must agree on (retry_after depends on the moment each one reads the clock)."""
    return v.ok, v.limit, v.remaining_requests, v.remaining_tokens


@pytest.mark.parametrize("seed", range(6))
def test_redis_admits_a_tick_batch_exactly_as_local_counters_admit_one_by_one(redis_server, seed) -> None:
    """admit.lua takes a whole loop tick of one team's admissions in one run: each request must get the
    verdict the in-process arithmetic gives it in the same order, with settlements in between."""
    rng = random.Random(seed)
    limits = Limits(rpm=rng.choice([None, 40]), tpm=rng.choice([None, 3000]), concurrency=rng.choice([None, 7]),
                    tokens_per_day=rng.choice([None, 5000]), tokens_per_month=rng.choice([None, 4500]))  # fmt: skip
    team = f"diff-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        local, shared = LocalCounters(), RedisCounters(redis_server.url)
        held: list[tuple[Verdict, Verdict, int]] = []
        spent = rng.randrange(0, 6000), rng.randrange(0, 6000)  # may be past a budget already
        await local.seed(team, *spent)
        await shared.seed(team, *spent)
        try:
            for round_ in range(8):
                asks = [(rng.randrange(0, 400), f"{round_}-{i}") for i in range(rng.randrange(1, 12))]
                mine = [await local.admit(team, limits, t, lease) for t, lease in asks]
                theirs = await asyncio.gather(*(shared.admit(team, limits, t, lease) for t, lease in asks))
                assert [_shape(v) for v in theirs] == [_shape(v) for v in mine], f"round {round_}, {asks}"
                held += [(a, b, t) for a, b, (t, _) in zip(mine, theirs, asks, strict=True) if a.ok]
                rng.shuffle(held)
                for a, b, reserved in held[: rng.randrange(0, len(held) + 1)]:
                    used = rng.randrange(0, 2 * reserved + 1)  # more than reserved, at times
                    local.settle(team, limits, a, used)
                    shared.settle(team, limits, b, used)
                    held.remove((a, b, reserved))
                await asyncio.sleep(0.01)  # the settlements reach Redis before the next round's admissions
                # Redis counts only what a limit needs; every admission holds a lease.
                counted = [k for k in LIMITS if k == "concurrency" or getattr(limits, k)]
                ours, redis_ = await local.peek(team), await shared.peek(team)
                assert {k: redis_[k] for k in counted} == {k: ours[k] for k in counted}, f"round {round_}"
        finally:
            await shared.aclose()

    run(main())


def test_a_caller_that_leaves_while_redis_admits_it_gives_its_slot_back(redis_server) -> None:
    """Cancelled before its batch is written, after, or with the reply on its way: the slot comes back."""
    team = f"gone-{uuid.uuid4().hex[:8]}"
    limits = Limits(concurrency=1, tokens_per_day=1000)

    async def main() -> None:
        shared = RedisCounters(redis_server.url)
        try:
            await shared.peek(team)  # connected, so the first admission is written at once
            for ticks in range(8):
                task = asyncio.ensure_future(shared.admit(team, limits, 100, f"lease-{ticks}"))
                for _ in range(ticks):
                    await asyncio.sleep(0)
                if task.done():  # answered before it could leave: the caller settles, as the gate would
                    shared.settle(team, limits, task.result(), 0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                for _ in range(50):
                    if (await shared.peek(team))["concurrency"] == 0:
                        break
                    await asyncio.sleep(0.01)
                assert await shared.peek(team) == {"rpm": 0, "tpm": 0, "concurrency": 0, "tokens_per_day": 0,
                                                   "tokens_per_month": 0}, f"cancelled after {ticks} ticks"  # fmt: skip
        finally:
            await shared.aclose()

    run(main())


def test_more_admissions_in_one_tick_than_one_script_run_takes_still_admit_exactly_the_limit(redis_server) -> None:
    team = f"burst-{uuid.uuid4().hex[:8]}"
    limits = Limits(rpm=3 * BATCH)

    async def main() -> list[Verdict]:
        shared = RedisCounters(redis_server.url)
        try:
            return await asyncio.gather(*(shared.admit(team, limits, 0, f"l{i}") for i in range(4 * BATCH)))
        finally:
            await shared.aclose()

    verdicts = run(main())
    assert [v.ok for v in verdicts] == [True] * (3 * BATCH) + [False] * BATCH
    assert [v.remaining_requests for v in verdicts[: 3 * BATCH]] == list(range(3 * BATCH - 1, -1, -1))


def test_a_tick_with_more_admissions_than_one_run_takes_still_settles_first(redis_server) -> None:
    """A slot freed in a tick is there for that tick's admissions, however many batches they fill."""
    team = f"order-{uuid.uuid4().hex[:8]}"
    limits = Limits(concurrency=1)

    async def main() -> list[Verdict]:
        shared = RedisCounters(redis_server.url)
        try:
            held = await shared.admit(team, limits, 0, "held")
            asks = [asyncio.ensure_future(shared.admit(team, limits, 0, f"l{i}")) for i in range(BATCH + 1)]
            await asyncio.sleep(0)  # every admission is waiting in this tick's batches
            shared.settle(team, limits, held, 0)
            return await asyncio.gather(*asks)
        finally:
            await shared.aclose()

    verdicts = run(main())
    assert [v.ok for v in verdicts] == [True] + [False] * BATCH


def test_a_connection_redis_drops_unasked_fails_its_callers_at_once_and_is_made_again() -> None:
    """Redis at maxclients says "-ERR max number of clients reached" to no command and closes: no error
    escapes into the event loop, a caller handed the dying connection gets an answer at once (not a
    wait without end), and the next call connects again."""
    from modelfleet.state.resp import RedisConnection

    async def scenario() -> tuple[list[dict], str, str]:
        refuse = asyncio.Event()
        escaped: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _, ctx: escaped.append(ctx) if "data_received" in ctx["message"] else None  # not the fake's
        )

        async def redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(4096)
            writer.write(b"+PONG\r\n")
            await refuse.wait()
            writer.write(b"-ERR max number of clients reached\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(redis, "127.0.0.1", 0)
        conn = RedisConnection(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
        assert await conn.call("PING") == b"PONG"
        dying = conn._proto
        assert dying is not None
        refuse.set()
        for _ in range(100):
            if dying.transport is None:
                break
            await asyncio.sleep(0.01)
        assert dying.transport is None, "the connection Redis dropped is still up"
        try:
            await asyncio.wait_for(dying.send(("PING",)), 1)
            late = "answered"
        except ConnectionError:
            late = "ConnectionError"
        except TimeoutError:
            late = "no answer"
        refuse.clear()
        again = (await asyncio.wait_for(conn.call("PING"), 5)).decode()
        conn.close()
        server.close()
        return escaped, late, again

    escaped, late, again = asyncio.run(scenario())
    assert not escaped, escaped
    assert (late, again) == ("ConnectionError", "PONG")


@pytest.mark.slow
def test_settlements_owed_while_redis_was_paused_go_out_on_the_first_new_connection() -> None:
    """Redis stops answering (SIGSTOP) with a slot held: the settlement is kept, and once Redis answers
    again, the new connection (the next admission's or the resend loop's) sends it before any admission."""
    from conftest import RedisServer

    server = RedisServer()
    team, limits = f"paused-{uuid.uuid4().hex[:8]}", Limits(concurrency=1)

    async def main() -> Verdict:
        shared = RedisCounters(server.url)
        try:
            held = await shared.admit(team, limits, 0, "held")
            server.proc.send_signal(signal.SIGSTOP)
            shared.settle(team, limits, held, 0)  # no reply: cut after 2 s, then owed
            await asyncio.sleep(7)  # the resend loop fails on the paused Redis, and backs off
            server.proc.send_signal(signal.SIGCONT)
            for _ in range(20):  # a connect begun just before SIGCONT may still time out
                with contextlib.suppress(Unavailable):
                    return await asyncio.wait_for(shared.admit(team, limits, 0, "next"), 3)
                await asyncio.sleep(0.2)
            raise AssertionError("Redis never answered again")
        finally:
            server.proc.send_signal(signal.SIGCONT)
            await shared.aclose()

    try:
        verdict = run(main())
    finally:
        server.stop()
    assert verdict.ok, verdict
