"""Limit counters in Redis, shared by every gateway process: the arithmetic of counters.py in Lua.

The scripts are lua/admit.lua and lua/settle.lua, each run atomically by Redis, so N gateways admit
exactly what one would. The admissions one team makes in one loop tick go to Redis as one script run
(and its settlements as another): Redis reads the team's windows and budgets once per batch, and the
gateway packs and parses one command, not one per request. Batches travel on one pipelining
connection (resp.py) without waiting for each other. Settlements are sent without waiting for their
replies. Keys carry the team in braces (`mf:{team}:...`), so one team's keys, and so each batch, live
on one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from modelfleet.background import Periodic, Reported
from modelfleet.config.schema import Limits
from modelfleet.errors import Unavailable
from modelfleet.state.counters import WINDOW, Verdict, periods
from modelfleet.state.resp import RedisConnection, RedisError, Send

log = logging.getLogger("modelfleet.state")

_LUA = resources.files("modelfleet.state") / "lua"
ADMIT = (_LUA / "admit.lua").read_text()
SETTLE = (_LUA / "settle.lua").read_text()

# A crashed gateway's in-flight slots free themselves after this long.
LEASE_TTL = 900.0
# How long a new connection waits for the ledger's spent budgets before it counts from zero.
_SEED_TIMEOUT = 2.0
# Requests per script run: bounds how long one run holds Redis (and Lua's stack for ZADD's arguments).
BATCH = 128


@functools.lru_cache(maxsize=1024)  # per request: teams are few, days change daily
def _keys(team: str, day: str, month: str) -> tuple[str, ...]:
    t = f"mf:{{{team}}}"
    return (f"{t}:rpm", f"{t}:tpm", f"{t}:inflight", f"{t}:day:{day}", f"{t}:month:{month}")


@functools.lru_cache(maxsize=1024)
def _settle_keys(team: str, day: str, month: str) -> tuple[str, ...]:
    return _keys(team, day, month)[1:]  # settle.lua has no use for the requests window


class _Script:
    """EVALSHA, loading the script once if Redis does not know it (a new or restarted Redis)."""

    def __init__(self, conn: RedisConnection, source: str) -> None:
        self.conn = conn
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: tuple[str, ...], args: list[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def __call__(self, keys: tuple[str, ...], args: list[Any]) -> Any:
        try:
            return await self.conn.call(*self.command(keys, args))
        except RedisError as exc:
            if not _noscript(exc):
                raise
            await self.conn.call("SCRIPT", "LOAD", self.source)
            return await self.conn.call(*self.command(keys, args))

    def send(self, keys: tuple[str, ...], args: list[Any]) -> asyncio.Future[Any]:
        """Written at once on the live connection; a Task only to connect first."""
        fut = self.conn.send_nowait(*self.command(keys, args))
        return fut if fut is not None else asyncio.ensure_future(self(keys, args))


def _seeds(team: str, day: str, month: str, day_tokens: int, month_tokens: int) -> list[tuple[Any, ...]]:
    # Redis keeps its counts across gateway restarts (NX): the ledger fills in only what Redis lost.
    keys = _keys(team, day, month)
    return [("SET", keys[3], day_tokens, "NX", "EX", 2 * 86400), ("SET", keys[4], month_tokens, "NX", "EX", 32 * 86400)]


def _noscript(exc: BaseException | None) -> bool:
    return isinstance(exc, RedisError) and str(exc).startswith("NOSCRIPT")


class _AdmitBatch:
    """One team's admissions in one loop tick, under one set of limits: one admit.lua run."""

    __slots__ = ("args", "keys", "limits", "now", "period", "undo_keys", "waiters")

    def __init__(self, team: str, limits: Limits, now: float) -> None:
        self.limits = limits  # held, so the id() it is filed under is not reused while it waits
        self.now = now
        day, month, day_left, month_left = periods(now)
        self.period = (day, month)
        self.keys = _keys(team, day, month)
        self.undo_keys = _settle_keys(team, day, month)
        self.args: list[Any] = [repr(now), LEASE_TTL, limits.rpm or 0, limits.tpm or 0, limits.concurrency or 0,
                                limits.tokens_per_day or 0, limits.tokens_per_month or 0, day_left, month_left,
                                WINDOW]  # fmt: skip
        self.waiters: list[tuple[asyncio.Future[Any], int, str]] = []

    def undo(self, tokens: int, lease: str) -> tuple[int, int, str]:
        """settle.lua's arguments that give back an admission's slot and reserved tokens."""
        return int(self.now), -tokens, lease


class RedisCounters:
    def __init__(self, url: str) -> None:
        self.url = url
        # Both scripts are loaded on every new connection (a restarted Redis has none), so a
        # settlement can be sent without waiting for its reply.
        self._conn = RedisConnection(url, on_connect=(("SCRIPT", "LOAD", ADMIT), ("SCRIPT", "LOAD", SETTLE)),
                                     prepare=self._prepare)  # fmt: skip
        self._admit = _Script(self._conn, ADMIT)
        self._settle = _Script(self._conn, SETTLE)
        # This tick's work, sent together at its end: settlements by keys, then admissions by (team, limits);
        # full batches wait in `_full` for the same end, so no admission overtakes the tick's settlements.
        self._settlements: dict[tuple[str, ...], list[Any]] = {}
        self._admissions: dict[tuple[str, int], _AdmitBatch] = {}
        self._full: list[_AdmitBatch] = []
        self._scheduled = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._failing = False
        # Settlements (and undos of admissions) whose replies were lost: sent again once Redis answers.
        # settle.lua is idempotent, so sending one twice is harmless; leaving one out would hold a
        # concurrency slot until LEASE_TTL.
        self._pending: list[tuple[tuple[str, ...], list[Any]]] = []
        # Tried every 2 s at most while Redis is away: an owed settlement holds a slot every gateway counts.
        self._retries = Periodic("limit counter settlements, sent again", 1.0, self._resend, logger=log,
                                 max_backoff=2.0)  # fmt: skip
        # Tokens each team has spent in the given UTC day and month, from the usage ledger: {team: (day, month)}.
        self.spent: Callable[[str, str], Awaitable[dict[str, tuple[int, int]]]] | None = None

    def _unreachable(self, exc: Exception) -> Unavailable:
        if not self._failing:
            log.error("limit counters at %s:%s unreachable: %s", self._conn.host, self._conn.port, exc)
        self._failing = True
        return Unavailable("the shared limit counters (state.counters) are unreachable; retry shortly", retry_after=2)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def admit(self, team: str, limits: Limits, tokens: int, lease: str) -> Verdict:
        batch = self._admissions.get((team, id(limits)))
        if batch is None or len(batch.waiters) >= BATCH:
            if batch is not None:
                self._full.append(batch)
            batch = self._admissions[(team, id(limits))] = _AdmitBatch(team, limits, time.time())
            self._schedule()
        # Its own future, not the batch's: a client that goes away cancels only this one, and the
        # batch's reply then gives back the slot and tokens it was admitted with.
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        batch.waiters.append((waiter, tokens, lease))
        try:
            ok, limit, retry, rem_req, rem_tok = await waiter
        except asyncio.CancelledError:
            # Cancelled with its admission already handed over but not yet seen: give it back here.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None and waiter.result()[0]:
                self._settle_later(batch.undo_keys, *batch.undo(tokens, lease))
            raise
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from None
        self._failing = False
        req = int(rem_req) if int(rem_req) >= 0 else None
        tok = int(float(rem_tok)) if float(rem_tok) >= 0 else None
        if not ok:
            return Verdict(False, limit.decode(), max(1.0, float(retry)), req, tok)
        return Verdict(True, "", 0.0, req, tok, int(batch.now), *batch.period, tokens, lease)

    def settle(self, team: str, limits: Limits, verdict: Verdict, tokens: int) -> None:
        keys = _settle_keys(team, verdict.day, verdict.month)
        self._settle_later(keys, verdict.second, tokens - verdict.reserved, verdict.lease)

    def _settle_later(self, keys: tuple[str, ...], second: int, delta: int, lease: str) -> None:
        self._settlements.setdefault(keys, []).extend((second, delta, lease))
        self._schedule()

    def _flush(self) -> None:
        """The end of a loop tick: its settlements, then its admissions, leave in one write."""
        self._scheduled = False
        settlements, self._settlements = self._settlements, {}
        batches, self._full = [*self._full, *self._admissions.values()], []
        self._admissions = {}
        for keys, args in settlements.items():  # first: the slots they free are there for the admissions
            for i in range(0, len(args), 3 * BATCH):
                chunk = args[i : i + 3 * BATCH]
                self._run(self._settle, keys, chunk, functools.partial(self._settled, keys=keys, args=chunk))
        for batch in batches:
            batch.waiters = [w for w in batch.waiters if not w[0].cancelled()]  # gone already: not admitted
            if batch.waiters:
                args = batch.args + [x for _, tokens, lease in batch.waiters for x in (tokens, lease)]
                self._run(self._admit, batch.keys, args, functools.partial(self._admitted, batch=batch))
        self._conn.flush()

    def _run(self, script: _Script, keys: tuple[str, ...], args: list[Any],
             done: Callable[[asyncio.Future[Any]], None], loaded: bool = False) -> None:  # fmt: skip
        """A script run whose reply goes to `done`; run once more, loading the script first, if Redis lost
        its scripts with the connection up (SCRIPT FLUSH: nothing ran)."""
        fut = asyncio.ensure_future(script(keys, args)) if loaded else script.send(keys, args)
        self._tasks.add(fut)

        def finished(f: asyncio.Future[Any]) -> None:
            self._tasks.discard(f)
            if not loaded and not f.cancelled() and _noscript(f.exception()):
                self._run(script, keys, args, done, loaded=True)
            else:
                done(f)

        fut.add_done_callback(finished)

    def _admitted(self, reply: asyncio.Future[Any], batch: _AdmitBatch) -> None:
        exc = RedisError("cancelled") if reply.cancelled() else reply.exception()
        if exc is not None:
            for waiter, _, _ in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            # It may have run before the connection went: undone once Redis answers again.
            undo = [x for _, tokens, lease in batch.waiters for x in batch.undo(tokens, lease)]
            self._pending.append((batch.undo_keys, undo))
            self._retries.start()
            return
        result = reply.result()
        for i, (waiter, tokens, lease) in enumerate(batch.waiters):
            verdict = result[5 * i : 5 * i + 5]
            if not waiter.cancelled():
                waiter.set_result(verdict)
            elif verdict[0]:  # admitted for a caller that left meanwhile: give back its slot and tokens
                self._settle_later(batch.undo_keys, *batch.undo(tokens, lease))

    def _settled(self, fut: asyncio.Future[Any], keys: tuple[str, ...], args: list[Any]) -> None:
        exc = RedisError("cancelled") if fut.cancelled() else fut.exception()
        if exc is not None:
            if not self._failing:
                log.warning("could not settle requests' limits (%s); sending them again when Redis answers", exc)
            self._failing = True
            self._pending.append((keys, args))
            self._retries.start()

    async def _resend(self) -> None:
        if not self._pending and not self._failing:
            return
        try:
            await self._conn.call("PING")  # a new connection sends what is owed (_prepare) before any admission
            await self._send_owed(self._settle)  # and what came to be owed since
        except (RedisError, OSError) as exc:
            raise Reported(str(exc)) from exc  # still away: the loop backs off and tries again
        if self._failing:
            log.info("limit counters at %s:%s reachable again", self._conn.host, self._conn.port)
            self._failing = False

    async def _send_owed(self, settle: Callable[[tuple[str, ...], list[Any]], Awaitable[Any]]) -> None:
        """Every owed settlement at once; those that fail stay owed (and the first failure is raised)."""
        owed, self._pending = self._pending, []  # taken: no other caller sends them meanwhile
        replies: list[Any] = [RedisError("not sent")] * len(owed)
        try:
            replies = await asyncio.gather(*(settle(keys, args) for keys, args in owed), return_exceptions=True)
        finally:
            failed = [(o, r) for o, r in zip(owed, replies, strict=True) if isinstance(r, BaseException)]
            self._pending[:0] = [o for o, _ in failed]
        if failed:
            raise failed[0][1]

    async def _prepare(self, send: Send) -> None:
        """Every new connection, before its first admission: budgets a restarted Redis lost are seeded
        from the ledger (else they would count from zero), and settlements still owed are sent."""
        if self.spent is not None:
            day, month, _, _ = periods(time.time())
            try:
                spent = await asyncio.wait_for(self.spent(day, month), _SEED_TIMEOUT)
            except Exception as exc:  # the store away too: better to admit than to refuse every team
                log.error("cannot read spent budgets from the store (%s); budgets count from zero", exc)
                spent = {}
            seeds = [send(command) for team, (on_day, in_month) in spent.items()
                     for command in _seeds(team, day, month, on_day, in_month)]  # fmt: skip
            for failed in await asyncio.gather(*seeds, return_exceptions=True):
                if isinstance(failed, BaseException):  # e.g. READONLY, OOM: admit rather than refuse everyone
                    log.error("cannot seed the spent budgets in Redis (%s); budgets count from zero", failed)
                    break
        with contextlib.suppress(RedisError, OSError):  # what fails stays owed, for the resend loop
            await self._send_owed(lambda keys, args: send(self._settle.command(keys, args)))

    async def seed(self, team: str, day_tokens: int, month_tokens: int) -> None:
        day, month, _, _ = periods(time.time())
        for command in _seeds(team, day, month, day_tokens, month_tokens):
            await self._conn.call(*command)

    async def peek(self, team: str) -> dict[str, int]:
        # The same reads admit.lua makes, without its writes; not atomic, which a reading need not be.
        now = time.time()
        day, month, _, _ = periods(now)
        rpm, tpm, inflight, per_day, per_month = _keys(team, day, month)

        def window(flat: list[bytes]) -> int:
            pairs = zip(flat[::2], flat[1::2], strict=True)
            return sum(int(n) for s, n in pairs if int(s) > int(now) - WINDOW)

        try:
            requests = window(await self._conn.call("HGETALL", rpm))
            tokens = window(await self._conn.call("HGETALL", tpm))
            leases = int(await self._conn.call("ZCOUNT", inflight, f"({now!r}", "+inf"))
            spent = [int(await self._conn.call("GET", k) or 0) for k in (per_day, per_month)]
        except (RedisError, OSError) as exc:
            raise self._unreachable(exc) from None
        return {"rpm": requests, "tpm": tokens, "concurrency": leases, "tokens_per_day": spent[0],
                "tokens_per_month": spent[1]}  # fmt: skip

    async def aclose(self) -> None:
        while True:  # a batch's reply may send undos: flush and wait until nothing is left in flight
            if self._scheduled:
                self._flush()
            if not self._tasks:
                break
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._retries.stop()  # first: two _resend runs at once would both send and pop the same one
        if self._pending:
            with contextlib.suppress(Exception):
                await self._resend()
        self._conn.close()
