"""`modelfleet teams`: list, create and delete teams kept in the store."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from modelfleet.cli.common import table, with_admin
from modelfleet.cli.options import fleet_file

_LIMITS = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month")


@click.group()
def teams() -> None:
    """Teams: who may use which routes, within which limits.

    Teams in the fleet file are changed by editing it; these commands manage the others.

    \b
      modelfleet teams list -f fleet.yaml
      modelfleet teams create eval --routes chat,small --rpm 600 --tokens-per-day 2000000 -f fleet.yaml
      modelfleet teams delete eval -f fleet.yaml
    """


@teams.command(name="list")
@fleet_file
@click.option("--json", "as_json", is_flag=True)
def list_teams(fleet_path: Path | None, as_json: bool) -> None:
    """Every team, with its routes and limits."""
    stored = with_admin(fleet_path, lambda admin: admin.teams())
    rows = [{"name": n, "source": src, **spec} for n, (spec, src) in stored.items()]
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    for r in rows:
        r["routes"] = r["routes"] if isinstance(r.get("routes"), str) else ",".join(r.get("routes", []))
        r["limits"] = " ".join(f"{k}={v:,}" for k, v in (r.get("limits") or {}).items())
    table(rows, ["name", "source", "routes", "limits"])


@teams.command()
@click.argument("name")
@click.option("--routes", default="*", show_default=True, help="Comma-separated routes, or * for all.")
@click.option("--rpm", type=click.IntRange(1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1), help="Tokens per minute.")
@click.option("--concurrency", type=click.IntRange(1), help="Requests in flight at once.")
@click.option("--tokens-per-day", type=click.IntRange(1), help="Token budget per UTC day.")
@click.option("--tokens-per-month", type=click.IntRange(1), help="Token budget per UTC month.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A label, e.g. cost_center=cc-42.")
@fleet_file
def create(name: str, routes: str, tags: tuple[str, ...], fleet_path: Path | None, **limits: int | None) -> None:
    """Create (or replace) a team."""
    spec = {
        "routes": "*" if routes.strip() == "*" else [r.strip() for r in routes.split(",") if r.strip()],
        "limits": {k: v for k, v in limits.items() if v is not None},
        "tags": dict(t.split("=", 1) for t in tags if "=" in t),
    }
    with_admin(fleet_path, lambda admin: admin.put_team(name, spec))
    click.echo(f"team {name!r} saved; create a key: modelfleet keys create --team {name}")


@teams.command()
@click.argument("name")
@fleet_file
def delete(name: str, fleet_path: Path | None) -> None:
    """Delete a team and revoke its keys."""
    with_admin(fleet_path, lambda admin: admin.delete_team(name))
    click.echo(f"team {name!r} deleted; its keys are revoked")
