"""`modelfleet keys`: create, list and revoke a team's API keys."""

from __future__ import annotations

import time
from pathlib import Path

import click
import orjson

from modelfleet.cli.common import table, with_admin
from modelfleet.cli.options import fleet_file


@click.group()
def keys() -> None:
    """API keys: shown once when created, stored only as SHA-256 digests.

    \b
      modelfleet keys create --team quant -f fleet.yaml
      modelfleet keys list --team quant -f fleet.yaml
      modelfleet keys revoke 3f9a1c2e -f fleet.yaml

    A running gateway accepts a new key at once and forgets a revoked one within
    state.refresh_interval (at once when revoked through its admin API).
    """


@keys.command()
@click.option("--team", required=True, help="The team the key belongs to.")
@fleet_file
@click.option("--json", "as_json", is_flag=True, help="Print {id, team, key} as JSON.")
def create(team: str, fleet_path: Path | None, as_json: bool) -> None:
    """Create a key and print it once: it cannot be shown again."""
    made = with_admin(fleet_path, lambda admin: admin.create_key(team))
    if as_json:
        click.echo(orjson.dumps(made).decode())
        return
    click.echo(made["key"])
    click.echo(f"key {made['id']} for team {team!r}: copy it now, it is not stored and cannot be shown again",
               err=True)  # fmt: skip


@keys.command(name="list")
@click.option("--team", required=True)
@fleet_file
@click.option("--json", "as_json", is_flag=True)
def list_keys(team: str, fleet_path: Path | None, as_json: bool) -> None:
    """A team's keys (ids only) and when they were made or revoked."""
    rows = with_admin(fleet_path, lambda admin: admin.keys_of(team))
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    for r in rows:
        for k in ("created_at", "revoked_at"):
            r[k] = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r[k])) if r[k] else ""
    table(rows, ["id", "key", "created_at", "revoked_at"])


@keys.command()
@click.argument("key_id")
@fleet_file
def revoke(key_id: str, fleet_path: Path | None) -> None:
    """Revoke a key by its id."""
    team = with_admin(fleet_path, lambda admin: admin.revoke_key(key_id))
    click.echo(f"revoked key {key_id} of team {team!r}")
