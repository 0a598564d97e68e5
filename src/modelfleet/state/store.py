"""The store: teams, API keys and the usage ledger, in SQL that SQLite and PostgreSQL both speak.

Drivers (sqlite.py, postgres.py) only run statements; this module owns the schema and the queries.
The gateway never writes here per request: usage arrives in batches (see usage.py), and keys are
read into memory (see access/directory.py).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from modelfleet.errors import ConfigError

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS teams (
        name TEXT PRIMARY KEY, spec TEXT NOT NULL, source TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, team TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS usage (
        day TEXT NOT NULL, team TEXT NOT NULL, route TEXT NOT NULL, deployment TEXT NOT NULL,
        variant TEXT NOT NULL, requests BIGINT NOT NULL, errors BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
        rate_limited BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (day, team, route, deployment, variant))""",
    """CREATE TABLE IF NOT EXISTS deployments (
        name TEXT PRIMARY KEY, desired TEXT NOT NULL, reason TEXT NOT NULL, since DOUBLE PRECISION NOT NULL,
        observed TEXT NOT NULL, checked_at DOUBLE PRECISION NOT NULL)""",
)

# Columns added after their table was first released: (table, column, definition). CREATE TABLE has them
# for a new store; an older one gets them with ALTER TABLE ... ADD COLUMN, which both databases speak
# (SQLite has no ADD COLUMN IF NOT EXISTS, so the column is looked for first).
ADDED_COLUMNS = (
    ("usage", "rate_limited", "BIGINT NOT NULL DEFAULT 0"),  # requests refused by a team's limits (429)
)

USAGE_COLUMNS = ("day", "team", "route", "deployment", "variant")


class Driver(Protocol):
    """Runs statements written with `?` placeholders; translates them for its database."""

    async def open(self) -> None: ...
    async def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None: ...
    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...
    async def fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    team: str
    route: str
    deployment: str
    variant: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    rate_limited: int = 0  # refused by the team's limits (429); not among `errors`


class Store:
    def __init__(self, driver: Driver, url: str) -> None:
        self.driver = driver
        self.url = url
        self._ready = False

    async def init(self) -> None:
        """Connect and create the tables; callers retry it while the database is away."""
        if self._ready:
            return
        await self.driver.open()
        for statement in SCHEMA:
            await self.driver.execute(statement)
        for table, column, definition in ADDED_COLUMNS:
            if not await self._has_column(table, column):
                try:
                    await self.driver.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                except Exception:
                    if not await self._has_column(table, column):  # else: another gateway added it just now
                        raise
        self._ready = True

    async def _has_column(self, table: str, column: str) -> bool:
        try:
            await self.driver.fetch(f"SELECT {column} FROM {table} WHERE 1 = 0")
        except Exception:  # each driver has its own "no such column" error
            return False
        return True

    async def close(self) -> None:
        await self.driver.close()

    # teams
    async def put_team(self, name: str, spec: dict[str, Any], source: str) -> None:
        await self.driver.execute(
            "INSERT INTO teams (name, spec, source, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, source = excluded.source, "
            "updated_at = excluded.updated_at",
            (name, orjson.dumps(spec).decode(), source, time.time()),
        )

    async def delete_team(self, name: str) -> None:
        await self.driver.execute("DELETE FROM teams WHERE name = ?", (name,))
        await self.driver.execute("UPDATE api_keys SET revoked_at = ? WHERE team = ? AND revoked_at IS NULL",
                                  (time.time(), name))  # fmt: skip

    async def teams(self) -> dict[str, tuple[dict[str, Any], str]]:
        rows = await self.driver.fetch("SELECT name, spec, source FROM teams ORDER BY name")
        return {name: (orjson.loads(spec), source) for name, spec, source in rows}

    # keys
    async def add_key(self, key_id: str, team: str, key_hash: str) -> None:
        await self.driver.execute(
            "INSERT INTO api_keys (id, team, hash, created_at) VALUES (?, ?, ?, ?)",
            (key_id, team, key_hash, time.time()),
        )

    async def revoke_key(self, key_id: str) -> str | None:
        """The team whose key it was, or None if there is no such live key."""
        rows = await self.driver.fetch("SELECT team FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,))
        if not rows:
            return None
        await self.driver.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (time.time(), key_id))
        return rows[0][0]

    async def live_keys(self) -> list[tuple[str, str, str]]:
        """(id, team, hash) of every key not revoked."""
        rows = await self.driver.fetch("SELECT id, team, hash FROM api_keys WHERE revoked_at IS NULL")
        return [(i, t, h) for i, t, h in rows]

    async def key_by_hash(self, key_hash: str) -> tuple[str, str] | None:
        rows = await self.driver.fetch(
            "SELECT id, team FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (key_hash,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def keys_of(self, team: str) -> list[dict[str, Any]]:
        rows = await self.driver.fetch(
            "SELECT id, created_at, revoked_at FROM api_keys WHERE team = ? ORDER BY created_at", (team,)
        )
        return [{"id": i, "created_at": c, "revoked_at": r} for i, c, r in rows]

    # usage
    async def add_usage(self, rows: list[UsageRow]) -> None:
        """Add (not overwrite) one batch; a single statement, so a batch lands whole or not at all."""
        await self.driver.executemany(
            "INSERT INTO usage (day, team, route, deployment, variant, requests, errors, prompt_tokens, "
            "completion_tokens, rate_limited) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (day, team, route, deployment, variant) DO UPDATE SET "
            "requests = usage.requests + excluded.requests, errors = usage.errors + excluded.errors, "
            "prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = usage.completion_tokens + excluded.completion_tokens, "
            "rate_limited = usage.rate_limited + excluded.rate_limited",
            [
                (r.day, r.team, r.route, r.deployment, r.variant, r.requests, r.errors, r.prompt_tokens,
                 r.completion_tokens, r.rate_limited)
                for r in rows
            ],
        )  # fmt: skip

    async def usage(
        self, *, since_day: str, team: str | None = None, by: tuple[str, ...] = USAGE_COLUMNS
    ) -> list[dict]:
        cols = [c for c in USAGE_COLUMNS if c in by]
        keys = ", ".join(cols)
        where, args = "day >= ?", [since_day]
        if team is not None:
            where += " AND team = ?"
            args.append(team)
        rows = await self.driver.fetch(
            f"SELECT {keys + ', ' if keys else ''}SUM(requests), SUM(errors), SUM(prompt_tokens), "
            f"SUM(completion_tokens), SUM(rate_limited) FROM usage WHERE {where}"
            + (f" GROUP BY {keys} ORDER BY {keys}" if keys else ""),
            tuple(args),
        )
        out = []
        for row in rows:
            doc = dict(zip(cols, row, strict=False))
            req, err, prompt, completion, limited = (int(v or 0) for v in row[len(cols) :])
            if not req:
                continue
            doc.update(requests=req, errors=err, rate_limited=limited, prompt_tokens=prompt,
                       completion_tokens=completion, total_tokens=prompt + completion)  # fmt: skip
            out.append(doc)
        return out

    # deployments: desired and last observed state, so a restarted gateway resumes
    async def put_deployment_state(
        self, name: str, desired: str, reason: str, since: float, observed: str, checked_at: float
    ) -> None:
        await self.driver.execute(
            "INSERT INTO deployments (name, desired, reason, since, observed, checked_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET desired = excluded.desired, reason = excluded.reason, "
            "since = excluded.since, observed = excluded.observed, checked_at = excluded.checked_at",
            (name, desired, reason, since, observed, checked_at),
        )

    async def deployment_states(self) -> dict[str, tuple[str, str, float, float]]:
        """name -> (desired, reason, since, checked_at)."""
        rows = await self.driver.fetch("SELECT name, desired, reason, since, checked_at FROM deployments")
        return {n: (d, r, float(s), float(c)) for n, d, r, s, c in rows}

    async def tokens_since(self, day: str) -> dict[str, int]:
        """Tokens per team from `day` on: what budgets already spent, for counters that start empty."""
        rows = await self.driver.fetch(
            "SELECT team, SUM(prompt_tokens + completion_tokens) FROM usage WHERE day >= ? GROUP BY team", (day,)
        )
        return {team: int(n or 0) for team, n in rows}


def redacted(url: str) -> str:
    """A database URL without its password, for messages and `config show`."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_store(url: str) -> Store:
    """A store for `url`, not yet connected: `await store.init()` connects."""
    if url.startswith("sqlite:///"):
        from modelfleet.state.sqlite import SQLiteDriver

        driver: Driver = SQLiteDriver(url.removeprefix("sqlite:///"))
    else:
        try:
            from modelfleet.state.postgres import PostgresDriver
        except ImportError:
            raise ConfigError(["state.store: PostgreSQL needs asyncpg: pip install 'modelfleet[postgres]'"]) from None
        driver = PostgresDriver(url)
    return Store(driver, url)
