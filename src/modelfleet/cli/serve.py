"""`modelfleet serve`: run the gateway and the fleet's deployments in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from modelfleet.cli.options import fleet_file, load_or_exit, run_async
from modelfleet.config import Fleet
from modelfleet.errors import ConfigError, EngineUnavailable
from modelfleet.observability import logging as mf_logging


@click.command()
@fleet_file
@click.option("--host", help="Interface to listen on (overrides server.host). Default 127.0.0.1.")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (overrides server.port; 0 picks one). Default 8000.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Overrides server.log_format.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Gateway processes sharing the port (overrides server.workers)."
)
@click.option("--worker-fleet", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
def serve(
    fleet_path: Path | None,
    host: str | None,
    port: int | None,
    log_format: str | None,
    log_level: str,
    workers: int | None,
    worker_fleet: Path | None,
) -> None:
    """Serve an OpenAI-compatible API for every route in the fleet.

    With no fleet file this runs SmolLM2-135M-Instruct on the embedded llama.cpp engine
    and answers to `model: smollm2`:

    \b
      modelfleet serve
      curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi!"}]}'

    SIGTERM or Ctrl-C stops taking new connections, lets in-flight requests finish
    (up to server.drain_timeout), then stops the engines.
    """
    if worker_fleet is not None:  # started by a primary `modelfleet serve` with server.workers > 1
        fleet = Fleet.model_validate(orjson.loads(worker_fleet.read_bytes()))
    else:
        fleet = load_or_exit(fleet_path)
    given = {"host": host, "port": port, "log_format": log_format, "workers": workers}
    overrides = {k: v for k, v in given.items() if v is not None}
    if overrides:
        fleet = fleet.model_copy(update={"server": fleet.server.model_copy(update=overrides)})
    mf_logging.configure(fleet.server.log_format, log_level.upper())

    from modelfleet.serve import serve as run

    try:
        run_async(run(fleet, worker=worker_fleet is not None))
    except ConfigError as exc:
        click.echo(click.style("config error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    except EngineUnavailable as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + f"cannot listen: {exc.strerror or exc}", err=True)
        sys.exit(1)
