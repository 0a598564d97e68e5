"""What the CLI commands share: the fleet file's store opened for one command, errors, tables."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from modelfleet.access.admin import TeamAdmin
from modelfleet.cli.options import load_or_exit, run_async
from modelfleet.errors import APIError
from modelfleet.state import open_store
from modelfleet.state.store import redacted

T = TypeVar("T")


def with_admin(fleet_path: Path | None, action: Callable[[TeamAdmin], Awaitable[T]]) -> T:
    fleet = load_or_exit(fleet_path)

    async def run() -> T:
        store = open_store(fleet.state.store)
        try:
            await store.init()
            return await action(TeamAdmin(store, list(fleet.routes), fleet.teams, fleet.limits_unsupported))
        finally:
            await store.close()

    try:
        return run_async(run())
    except APIError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot reach the store {redacted(fleet.state.store)}: {exc}")
    raise AssertionError("unreachable")


def fail(message: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(1)


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(*columns, box=None, header_style="bold")
    for row in rows:
        t.add_row(*(_cell(row.get(c)) for c in columns))
    Console().print(t)


def _cell(v: Any) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)
