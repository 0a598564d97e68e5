"""`modelfleet usage`: tokens and requests by team, route, deployment, variant and day."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from modelfleet.cli.common import table, with_admin
from modelfleet.cli.options import fleet_file


@click.command()
@click.option("--team", help="Only this team.")
@click.option("--since", default="7d", show_default=True, help="A span (24h, 7d, 2w) or a date (2026-11-01).")
@click.option("--by", default="day,team,route,deployment,variant", show_default=True,
              help="Columns to group by.")  # fmt: skip
@fleet_file
@click.option("--json", "as_json", is_flag=True, help="Rows as a JSON list.")
def usage(team: str | None, since: str, by: str, fleet_path: Path | None, as_json: bool) -> None:
    """Usage from the ledger (written by the gateway every state.flush_interval).

    The variant is the deployment a weighted route assigned; the deployment is the one that
    answered (they differ when a request failed over). rate_limited (shown when there are
    any) counts the requests the team's limits refused (429); errors, the other failures.

    \b
      modelfleet usage --team quant --since 7d
      modelfleet usage --by team,day --json
    """
    rows = with_admin(fleet_path, lambda admin: admin.usage(since=since, team=team, by=by))
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        click.echo(f"no usage since {since}" + (f" for team {team!r}" if team else ""), err=True)
        return
    refused = ["rate_limited"] if any(r["rate_limited"] for r in rows) else []  # a column only when there were any
    cols = [c for c in by.split(",") if c] + ["requests", "errors", *refused, "prompt_tokens", "completion_tokens",
                                              "total_tokens"]  # fmt: skip
    table(rows, cols)
