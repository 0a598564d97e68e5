"""SQLite through the standard library, on one worker thread so the event loop never blocks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any


class SQLiteDriver:
    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection, used by one thread at a time (the lock), in WAL mode so the CLI can
            # read and write while a gateway runs.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db

        if self._db is None:
            self._db = await asyncio.to_thread(connect)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the SQLite store is not open")
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    async def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        await self._run(self.db.execute, sql, args)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        def many() -> None:
            with self.db:  # one transaction: the batch lands whole or not at all
                self.db.execute("BEGIN")
                self.db.executemany(sql, rows)

        await self._run(many)

    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._run(lambda: self.db.execute(sql, args).fetchall())

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
