"""`modelfleet config`: check and show fleet files."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from modelfleet.cli.options import fleet_file, load_or_exit
from modelfleet.config.defaults import DEFAULT_FLEET_YAML
from modelfleet.config.include import ownership
from modelfleet.state.store import redacted


@click.group()
def config() -> None:
    """Check and show fleet files."""


@config.command()
@fleet_file
def check(fleet_path: Path | None) -> None:
    """Validate a fleet file; exit 2 and name every problem (file, field, line) if it is wrong."""
    fleet = load_or_exit(fleet_path)
    where = fleet_path or "the built-in fleet"
    click.echo(f"{where}: ok: {len(fleet.deployments)} deployment(s), {len(fleet.routes)} route(s), "
               f"{len(fleet.teams)} team(s)")  # fmt: skip
    for name, route in fleet.routes.items():
        split = ", ".join(f"{d} ({w})" for d, w in route.deployments.items())
        click.echo(f"  route {name} -> {split}; timeout {route.timeout:g}s")
    owners = ownership(fleet)
    if owners:  # a platform fleet with team files: who declared what
        click.echo("owners:")
        for what, owner in sorted(owners.items(), key=lambda o: (o[1].team or "", o[0])):
            click.echo(f"  {what:40} {owner.file} ({f'team {owner.team}' if owner.team else 'platform'})")
        for team_name, team in sorted(fleet.teams.items()):
            routes = "*" if team.routes == "*" else ", ".join(team.routes)
            click.echo(f"  team {team_name} may use: {routes}")


@config.command()
@fleet_file
@click.option("--example", is_flag=True, help="Print the built-in fleet file as a starting point.")
def show(fleet_path: Path | None, example: bool) -> None:
    """Print the fleet with every default filled in (or, with --example, the built-in fleet file)."""
    if example:
        click.echo(DEFAULT_FLEET_YAML, nl=False)
        return
    fleet = load_or_exit(fleet_path)
    # Every field marked Secret in the schema prints as a mask; a password in the store URL is cut out too.
    doc = fleet.model_dump(mode="json")
    doc["state"]["store"] = redacted(doc["state"]["store"])
    doc["state"]["counters"] = redacted(doc["state"]["counters"])  # redis://:password@host
    click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
