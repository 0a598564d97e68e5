"""`modelfleet cost`: dollars per month per deployment and team, and chargeback by tokens."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from modelfleet.cli.options import fleet_file, load_or_exit

prices_option = click.option(
    "--prices",
    "prices_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A price table (from `modelfleet cost prices --refresh`). Default: the shipped, dated one.",
)


@click.group(invoke_without_command=True)
@fleet_file
@click.option("--month", help="The calendar month (UTC) to price, e.g. 2026-11. Default: this month.")
@click.option("--json", "as_json", is_flag=True, help="The estimate as JSON.")
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a bar chart (PNG; needs the bench extra's matplotlib).",
)
@click.option("--chargeback", is_flag=True, help="Split each deployment's cost across teams by tokens used.")
@click.option("--since", default="30d", show_default=True, help="Chargeback window: 30d, 2w, or a date 2026-11-01.")
@prices_option
@click.pass_context
def cost(
    ctx: click.Context,
    fleet_path: Path | None,
    month: str | None,
    as_json: bool,
    chart: Path | None,
    chargeback: bool,
    since: str,
    prices_path: Path | None,
) -> None:
    """What the fleet costs: per deployment and per team, always-on against scheduled hours.

    Hours come from each deployment's schedule (cron windows in its timezone, DST included); an idle
    stop makes a range, from `least` (every window cut to idle_stop_after) to `scheduled`. Prices come
    from a shipped, dated table of on-demand list prices (see `modelfleet cost prices`).

    \b
      modelfleet cost -f fleet.yaml
      modelfleet cost -f fleet.yaml --month 2026-12 --json
      modelfleet cost -f fleet.yaml --chart cost.png
      modelfleet cost -f fleet.yaml --chargeback --since 30d    (reads the usage ledger)
    """
    if ctx.invoked_subcommand is not None:
        return
    from modelfleet.cost import estimate, load_prices, month_period

    fleet = load_or_exit(fleet_path)
    prices = load_prices(prices_path)
    if chargeback:
        _chargeback(fleet_path, since, prices, as_json)
        return
    try:
        start, end = month_period(month)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    result = estimate(fleet, start, end, prices)
    if chart is not None:
        from modelfleet.cost.chart import bar_chart

        bar_chart(result, chart)
        click.echo(f"chart: {chart}", err=True)
    if as_json:
        for warning in result.warnings:  # in the JSON too ("warnings"); here so a script's log shows it
            click.echo(f"warning: unpriced: {warning}", err=True)
        click.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    _table(result)


def _table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 130))  # a report, also when piped
    t = Table(
        "deployment",
        "team",
        "instances",
        "$/hour",
        "hours",
        "always on",
        "scheduled",
        "least (idle stop)",
        box=None,
        header_style="bold",
        title=f"{result.start:%Y-%m} (UTC), USD",
    )
    for d in result.deployments:
        b = d.billing
        what = f"{b.count} x {b.instance_type} {b.region}" if b else d.kind
        if d.hourly is None:
            t.add_row(d.name, d.team or "", what, "", "", "unpriced" if d.unpriced else "", "", d.note)
            continue
        t.add_row(
            d.name,
            d.team or "",
            what,
            f"{d.hourly:.4f}",
            f"{d.hours.most:.1f}/{d.hours.always_on:.0f}",
            f"{d.always_on_usd:,.2f}",
            f"{d.most_usd:,.2f}",
            f"{d.least_usd:,.2f}",
        )
    console.print(t)
    teams = Table("team", "always on", "scheduled", "least (idle stop)", box=None, header_style="bold")
    for team, usd in sorted(result.by_team().items()):
        teams.add_row(team, f"{usd['always_on']:,.2f}", f"{usd['scheduled']:,.2f}", f"{usd['least']:,.2f}")
    console.print(teams)
    console.print(f"prices: {result.prices.source}, as of {result.prices.as_of} ({result.prices.path})")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] unpriced: {warning}")


def _chargeback(fleet_path: Path | None, since: str, prices, as_json: bool) -> None:
    from modelfleet.cli.common import fail, table, with_admin
    from modelfleet.cost.chargeback import chargeback, window
    from modelfleet.errors import InvalidRequest

    fleet = load_or_exit(fleet_path)
    try:
        start, end = window(since)
    except InvalidRequest as exc:
        fail(exc.message)
    rows = with_admin(fleet_path, lambda admin: admin.usage(since=since, team=None, by="day,team,deployment"))
    result = chargeback(fleet, rows, start, end, prices)
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    table(
        [{**r, "usd": f"{r['usd']:,.2f}", "share": f"{r['share']:.1%}"} for r in result["rows"]],
        ["deployment", "team", "tokens", "usd", "share"],
    )
    click.echo()
    teams = [{"team": t, "tokens": v["tokens"], "usd": f"{v['usd']:,.2f}"} for t, v in sorted(result["teams"].items())]
    table(teams, ["team", "tokens", "usd"])
    click.echo(f"since {start:%Y-%m-%d} (UTC) until now; (idle) = days it ran and no team used it")


@cost.command()
@prices_option
@click.option("--refresh", is_flag=True, help="Price every entry again from the AWS Price List API.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where --refresh writes the new table (then: modelfleet cost --prices FILE).",
)
@click.option(
    "--region",
    "api_region",
    default="us-east-1",
    show_default=True,
    help="The Price List API's region (us-east-1, eu-central-1 or ap-south-1).",
)
def prices(prices_path: Path | None, refresh: bool, output: Path | None, api_region: str) -> None:
    """Show the price table in use (source, date, entries), or --refresh it from the AWS Price List API.

    --refresh needs boto3 (the sagemaker extra), AWS credentials allowed `pricing:GetProducts`, and
    network access; it keeps the same regions and instance types and prices each again.

    \b
      modelfleet cost prices
      modelfleet cost prices --refresh -o prices.json
      modelfleet cost -f fleet.yaml --prices prices.json
    """
    from modelfleet.cost.prices import load_prices
    from modelfleet.cost.prices import refresh as refresh_table

    table = load_prices(prices_path)
    if not refresh:
        click.echo(f"{table.path}: {table.source}, as of {table.as_of}")
        click.echo(table.doc.get("about", ""))
        for service in ("sagemaker", "ec2"):
            for region, entries in table.doc.get(service, {}).items():
                click.echo(f"  {service:9} {region:13} {len(entries)} instance types")
        return
    if output is None:
        raise click.UsageError("--refresh needs -o FILE: the shipped table is not changed in place")
    try:
        import boto3
    except ImportError:
        click.echo("error: --refresh needs boto3: pip install 'modelfleet[sagemaker]'", err=True)
        sys.exit(2)
    client = boto3.client("pricing", region_name=api_region)
    doc = refresh_table(table, client, datetime.now(UTC).strftime("%Y-%m-%d"))
    output.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    click.echo(f"wrote {output}; {len(doc['not_refreshed'])} entries kept their old price", err=True)
