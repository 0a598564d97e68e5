"""Options and helpers shared by the commands."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from modelfleet.config import Fleet, default_fleet, load_fleet
from modelfleet.errors import ConfigError

fleet_file = click.option(
    "-f",
    "--file",
    "fleet_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="MODELFLEET_FILE",
    help="Fleet file (YAML). Default: the built-in fleet (bundled SmolLM2). Env: MODELFLEET_FILE.",
)

# The renderers (`deploy aws|k8s|observability`) have no built-in fleet to fall back on: the file is required.
required_fleet_file = click.option(
    "-f",
    "--file",
    "fleet_path",
    required=True,
    envvar="MODELFLEET_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Fleet file (YAML). Env: MODELFLEET_FILE.",
)


def load_or_exit(path: Path | None) -> Fleet:
    try:
        return load_fleet(path) if path else default_fleet()
    except ConfigError as exc:
        click.echo(click.style("config error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed (faster sockets and timers), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
