"""Limit counters in Redis, shared by every gateway process: the arithmetic of counters.py in Lua.

The scripts are lua/admit.lua and lua/settle.lua. Each admission is one script run, atomic in Redis,
so N gateways admit exactly what one would.
Admissions made in the same event-loop tick travel together in one pipeline, and settlements are
sent in the background, so a busy gateway pays about one round trip per batch, not per request.
Keys carry the team in braces (`mf:{team}:...`), so one team's keys live on one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from modelfleet.config.schema import Limits
from modelfleet.errors import Unavailable
from modelfleet.state.counters import WINDOW, Verdict, periods

log = logging.getLogger("modelfleet.state")

_LUA = resources.files("modelfleet.state") / "lua"
ADMIT = (_LUA / "admit.lua").read_text()
SETTLE = (_LUA / "settle.lua").read_text()

# A crashed gateway's in-flight slots free themselves after this long.
LEASE_TTL = 900.0


def _keys(team: str, day: str, month: str) -> list[str]:
    t = f"mf:{{{team}}}"
    return [f"{t}:rpm", f"{t}:tpm", f"{t}:inflight", f"{t}:day:{day}", f"{t}:month:{month}"]


class RedisCounters:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._settles: list[tuple[list[str], list[Any]]] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def admit(self, team: str, limits: Limits, tokens: int, lease: str) -> Verdict:
        now = time.time()
        day, month, day_left, month_left = periods(now)
        args = [repr(now), tokens, lease, LEASE_TTL, limits.rpm or 0, limits.tpm or 0, limits.concurrency or 0,
                limits.tokens_per_day or 0, limits.tokens_per_month or 0, day_left, month_left, WINDOW]  # fmt: skip
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((_keys(team, day, month), args, fut))
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush())
        ok, limit, retry, rem_req, rem_tok = await fut
        req = int(rem_req) if int(rem_req) >= 0 else None
        tok = int(float(rem_tok)) if float(rem_tok) >= 0 else None
        if not ok:
            return Verdict(False, limit.decode(), max(1.0, float(retry)), req, tok)
        return Verdict(True, "", 0.0, req, tok, int(now), day, month, tokens, lease)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every request of this tick join the batch
        while self._pending or self._settles:
            batch, self._pending = self._pending, []
            settles, self._settles = self._settles, []
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for keys, args, _ in batch:
                        await self._admit(keys, args, client=pipe)
                    for keys, args in settles:
                        await self._settle(keys, args, client=pipe)
                    results = await pipe.execute()
            except (RedisError, OSError) as exc:
                log.error("limit counters at %s unreachable: %s", self.url, exc)
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(Unavailable(
                            "the shared limit counters (state.counters) are unreachable; retry shortly", retry_after=2
                        ))  # fmt: skip
                continue
            for (_, _, fut), result in zip(batch, results, strict=False):
                if not fut.done():
                    fut.set_result(result)
        self._flushing = False

    def settle(self, team: str, limits: Limits, verdict: Verdict, tokens: int) -> None:
        keys = _keys(team, verdict.day, verdict.month)
        self._settles.append(([keys[1], keys[2], keys[3], keys[4]], [verdict.second, tokens - verdict.reserved,
                                                                    verdict.lease]))  # fmt: skip
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush())

    async def seed(self, team: str, day_tokens: int, month_tokens: int) -> None:
        # Redis keeps its counts across gateway restarts; the ledger fills in only what Redis lost.
        day, month, _, _ = periods(time.time())
        keys = _keys(team, day, month)
        await self._redis.set(keys[3], day_tokens, nx=True, ex=2 * 86400)
        await self._redis.set(keys[4], month_tokens, nx=True, ex=32 * 86400)

    async def aclose(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
