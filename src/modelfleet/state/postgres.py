"""PostgreSQL through asyncpg: a small pool shared by the gateway's background work."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    counter = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresDriver:
    def __init__(self, url: str) -> None:
        self.url = url.replace("postgres://", "postgresql://", 1)
        self._pool_: asyncpg.Pool | None = None
        self._sql: dict[str, str] = {}

    async def open(self) -> None:
        if self._pool_ is None:
            self._pool_ = await asyncpg.create_pool(self.url, min_size=1, max_size=4, timeout=5, command_timeout=10)

    @property
    def _pool(self) -> asyncpg.Pool:
        if self._pool_ is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return self._pool_

    def _q(self, sql: str) -> str:
        q = self._sql.get(sql)
        if q is None:
            q = self._sql[sql] = _numbered(sql)
        return q

    async def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        await self._pool.execute(self._q(sql), *args)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(self._q(sql), rows)

    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._pool.fetch(self._q(sql), *args)]

    async def close(self) -> None:
        if self._pool_ is not None:
            await self._pool_.close()
            self._pool_ = None
