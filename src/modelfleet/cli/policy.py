"""`modelfleet policy check`: the fleet's guardrails, for people and for CI."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelfleet.cli.options import fleet_file, load_or_exit


@click.group()
def policy() -> None:
    """Check a fleet, and the Terraform plan made from it, against the fleet's `policy:`."""


@policy.command()
@fleet_file
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="`terraform show -json PLANFILE` output to check as well (any Terraform, hand-written too).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="json and sarif are for code review tools (GitHub code scanning takes sarif).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--month", help="The month the cost rule prices (2026-11). Default: this month.")
@click.option(
    "--prices",
    "prices_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A price table (from `modelfleet cost prices --refresh`). Default: the shipped one.",
)
def check(
    fleet_path: Path | None,
    plan_path: Path | None,
    fmt: str,
    output: Path | None,
    month: str | None,
    prices_path: Path | None,
) -> None:
    """Check the merged fleet (and --plan) against its policy.

    Each violation names the fleet path or plan resource, the rule, the actual value and the fix.
    Exit codes: 0 the policy holds, 1 violations, 2 the fleet file or the plan cannot be read.

    \b
      modelfleet policy check -f fleet.yaml
      terraform show -json plan.tfplan > plan.json
      modelfleet policy check -f fleet.yaml --plan plan.json --format sarif -o policy.sarif
    """
    from modelfleet.cost import load_prices, month_period
    from modelfleet.policy import check as run_check
    from modelfleet.policy import report
    from modelfleet.policy.locate import locate
    from modelfleet.policy.plan_file import PlanError, read_plan

    fleet = load_or_exit(fleet_path)
    plan = None
    if plan_path is not None:
        try:
            plan = read_plan(plan_path)
        except PlanError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    try:
        period = month_period(month)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    prices = load_prices(prices_path)
    try:
        found = run_check(fleet, plan, plan_file=str(plan_path) if plan_path else None, prices=prices, period=period)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if plan is None:
            raise
        # the shape was checked; a value of a type Terraform never writes still gets an answer, not a traceback
        click.echo(f"error: {plan_path}: cannot read this plan ({type(exc).__name__}: {exc}); expected "
                   "`terraform show -json PLANFILE` output", err=True)  # fmt: skip
        sys.exit(2)
    found = locate(found, str(fleet_path) if fleet_path else None, str(plan_path) if plan_path else None)
    checked = str(fleet_path or "the built-in fleet") + (f" and {plan_path}" if plan_path else "")
    if fmt == "json":
        text = report.json(found, checked)
    elif fmt == "sarif":
        text = report.sarif(found, fleet.policy.rules, str(fleet_path or "fleet.yaml"))
    else:
        text = report.text(found, checked)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"policy: {len(found)} violation(s); report: {output}", err=True)
    else:
        click.echo(text)
    sys.exit(1 if found else 0)


@policy.command()
@fleet_file
def rules(fleet_path: Path | None) -> None:
    """List the rules: the built-in ones (set under `policy:`) and the fleet's own JMESPath rules."""
    from modelfleet.policy.violation import RULES

    for rule_id, text in RULES.items():
        click.echo(f"{rule_id:30} {text}")
    if fleet_path is not None:
        for rule in load_or_exit(fleet_path).policy.rules:
            click.echo(f"{rule.id:30} {rule.description or rule.fix} (JMESPath, {rule.scope}: {rule.require})")
