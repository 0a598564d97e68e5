"""Limit counters in Redis, shared by every gateway process: the arithmetic of counters.py in Lua.

The scripts are lua/admit.lua and lua/settle.lua. Each admission is one script run, atomic in Redis,
so N gateways admit exactly what one would. Admissions travel on one pipelining connection
(resp.py): a request waits for its own round trip and nothing else. Settlements are sent without
waiting for their replies. Keys carry the team in braces (`mf:{team}:...`), so one team's keys
live on one Redis Cluster slot.
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
from modelfleet.state.resp import RedisConnection, RedisError

log = logging.getLogger("modelfleet.state")

_LUA = resources.files("modelfleet.state") / "lua"
ADMIT = (_LUA / "admit.lua").read_text()
SETTLE = (_LUA / "settle.lua").read_text()

# A crashed gateway's in-flight slots free themselves after this long.
LEASE_TTL = 900.0


@functools.lru_cache(maxsize=1024)  # per request: teams are few, days change daily
def _keys(team: str, day: str, month: str) -> list[str]:
    t = f"mf:{{{team}}}"
    return [f"{t}:rpm", f"{t}:tpm", f"{t}:inflight", f"{t}:day:{day}", f"{t}:month:{month}"]


class _Script:
    """EVALSHA, loading the script once if Redis does not know it (a new or restarted Redis)."""

    def __init__(self, conn: RedisConnection, source: str) -> None:
        self.conn = conn
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.conn.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.conn.call("SCRIPT", "LOAD", self.source)
            return await self.conn.call("EVALSHA", self.sha, len(keys), *keys, *args)

    def nowait(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any] | None:
        return self.conn.send_nowait("EVALSHA", self.sha, len(keys), *keys, *args)


class RedisCounters:
    def __init__(self, url: str) -> None:
        self.url = url
        # Both scripts are loaded on every new connection (a restarted Redis has none), so a
        # settlement can be sent without waiting for its reply.
        self._conn = RedisConnection(url, on_connect=(("SCRIPT", "LOAD", ADMIT), ("SCRIPT", "LOAD", SETTLE)))
        self._admit = _Script(self._conn, ADMIT)
        self._settle = _Script(self._conn, SETTLE)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._failing = False
        # Settlements (and undos of admissions) whose replies were lost: sent again once Redis answers.
        # settle.lua is idempotent, so sending one twice is harmless; leaving one out would hold a
        # concurrency slot until LEASE_TTL.
        self._pending: list[tuple[list[str], list[Any]]] = []
        self._retries = Periodic("limit counter settlements, sent again", 1.0, self._resend, logger=log)
        self.on_reconnect: Callable[[], Awaitable[None]] | None = None  # re-seeds budgets a new Redis lacks

    def _unreachable(self, exc: Exception) -> Unavailable:
        if not self._failing:
            log.error("limit counters at %s:%s unreachable: %s", self._conn.host, self._conn.port, exc)
        self._failing = True
        return Unavailable("the shared limit counters (state.counters) are unreachable; retry shortly", retry_after=2)

    async def admit(self, team: str, limits: Limits, tokens: int, lease: str) -> Verdict:
        now = time.time()
        day, month, day_left, month_left = periods(now)
        args = [repr(now), tokens, lease, LEASE_TTL, limits.rpm or 0, limits.tpm or 0, limits.concurrency or 0,
                limits.tokens_per_day or 0, limits.tokens_per_month or 0, day_left, month_left, WINDOW]  # fmt: skip
        keys = _keys(team, day, month)
        # Written at once on the live connection (a Task only to connect first); shielded: a client that
        # goes away while Redis admits it must not leave its lease and tokens behind.
        reply = self._admit.nowait(keys, args) or asyncio.ensure_future(self._admit(keys, args))
        try:
            try:
                result = await asyncio.shield(reply)
            except RedisError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                # Redis lost its scripts with the connection up (SCRIPT FLUSH); nothing ran: load, run again.
                reply = asyncio.ensure_future(self._admit(keys, args))
                result = await asyncio.shield(reply)
            ok, limit, retry, rem_req, rem_tok = result
        except asyncio.CancelledError:
            reply.add_done_callback(lambda r: self._undo(r, keys, int(now), tokens, lease))
            raise
        except (RedisError, OSError) as exc:
            # It may have run before the connection went: undo it, once Redis answers again.
            self._retry(keys, [int(now), -tokens, lease])
            raise self._unreachable(exc) from None
        self._failing = False
        req = int(rem_req) if int(rem_req) >= 0 else None
        tok = int(float(rem_tok)) if float(rem_tok) >= 0 else None
        if not ok:
            return Verdict(False, limit.decode(), max(1.0, float(retry)), req, tok)
        return Verdict(True, "", 0.0, req, tok, int(now), day, month, tokens, lease)

    def settle(self, team: str, limits: Limits, verdict: Verdict, tokens: int) -> None:
        k = _keys(team, verdict.day, verdict.month)
        self._send_settle(k, [verdict.second, tokens - verdict.reserved, verdict.lease])

    def _undo(self, reply: asyncio.Future[Any], keys: list[str], second: int, tokens: int, lease: str) -> None:
        """An admission whose caller left before the reply: give back its slot and its reserved tokens."""
        if reply.cancelled() or reply.exception() is not None or not reply.result()[0]:
            return
        self._send_settle(keys, [second, -tokens, lease])

    def _send_settle(self, keys: list[str], args: list[Any]) -> None:
        """settle.lua, sent without waiting for its reply (connecting first if need be)."""
        keys = [keys[1], keys[2], keys[3], keys[4]]
        fut: asyncio.Future[Any] | None = self._settle.nowait(keys, args)
        if fut is None:
            fut = asyncio.ensure_future(self._settle(keys, args))
        self._tasks.add(fut)
        fut.add_done_callback(lambda f: self._settled(f, keys, args))

    def _settled(self, fut: asyncio.Future[Any], keys: list[str], args: list[Any], again: bool = False) -> None:
        self._tasks.discard(fut)
        exc = None if fut.cancelled() else fut.exception()
        if isinstance(exc, RedisError) and str(exc).startswith("NOSCRIPT") and not again:
            # Redis lost its scripts (SCRIPT FLUSH): sent again at once, by the call that loads them first.
            resent = asyncio.ensure_future(self._settle(keys, args))
            self._tasks.add(resent)
            resent.add_done_callback(lambda f: self._settled(f, keys, args, again=True))
            return
        if exc is not None:
            if not self._failing:
                log.warning("could not settle a request's limits (%s); sending it again when Redis answers",
                            fut.exception())  # fmt: skip
            self._failing = True
            self._pending.append((keys, args))
            self._retries.start()

    def _retry(self, keys: list[str], args: list[Any]) -> None:
        self._pending.append(([keys[1], keys[2], keys[3], keys[4]], args))
        self._retries.start()

    async def _resend(self) -> None:
        while self._pending:
            keys, args = self._pending[0]
            try:
                await self._settle(keys, args)
            except (RedisError, OSError) as exc:
                raise Reported(str(exc)) from exc  # still away: the loop backs off and tries again
            self._pending.pop(0)
        if self._failing:
            log.info("limit counters at %s:%s reachable again", self._conn.host, self._conn.port)
            self._failing = False
            if self.on_reconnect is not None:
                await self.on_reconnect()

    async def seed(self, team: str, day_tokens: int, month_tokens: int) -> None:
        # Redis keeps its counts across gateway restarts; the ledger fills in only what Redis lost.
        day, month, _, _ = periods(time.time())
        keys = _keys(team, day, month)
        await self._conn.call("SET", keys[3], day_tokens, "NX", "EX", 2 * 86400)
        await self._conn.call("SET", keys[4], month_tokens, "NX", "EX", 32 * 86400)

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
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending:
            with contextlib.suppress(Exception):
                await self._resend()
        await self._retries.stop()
        self._conn.close()
