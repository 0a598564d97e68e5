"""`modelfleet deploy ci`: write the CI pipeline of a fleet repository (attached to the `deploy` group)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "-f",
    "--file",
    "fleet",
    default="fleet.yaml",
    show_default=True,
    help="The fleet file, relative to the repository root.",
)
@click.option(
    "--terraform-dir",
    default="deploy/aws",
    show_default=True,
    help="Where the Terraform configuration lives (or is rendered to).",
)
@click.option("--branch", default="main", show_default=True, help="Merges to this branch apply.")
@click.option("--region", default="us-east-1", show_default=True, help="AWS_REGION for the pipeline.")
@click.option("--render", default="", help="A command that writes --terraform-dir from the fleet, run first.")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The repository root to write into.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing workflow or Makefile.")
def ci(fleet: str, terraform_dir: str, branch: str, region: str, render: str, out: Path, force: bool) -> None:
    """Write a GitHub Actions workflow and a Makefile: fmt -> validate -> plan -> policy -> apply.

    Pull requests run fmt, validate, plan and `modelfleet policy check`, post the plan and the policy
    report as a comment and the violations as SARIF (code scanning); a merge applies the plan that
    passed. Locally, `make policy` runs the same steps.

    Two IAM roles: a read-only one for pull requests, and one that applies, trusted only for the
    `production` environment. Set them as `deploy.ci.plan_role_arn` / `apply_role_arn` in the fleet
    file (read from the output folder), or as the repository secrets AWS_PLAN_ROLE_ARN / AWS_APPLY_ROLE_ARN.

    \b
      modelfleet deploy ci -f fleet.yaml --terraform-dir deploy/aws
    """
    from modelfleet.deploy.ci import CIOptions, render_ci

    roles = _roles(out / fleet)
    try:
        opts = CIOptions(fleet=fleet, terraform_dir=terraform_dir, branch=branch, region=region, render=render,
                         plan_role_arn=roles.plan_role_arn, apply_role_arn=roles.apply_role_arn)  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    files = render_ci(opts)
    existing = [p for p in files if (out / p).exists()]
    if existing and not force:
        raise click.ClickException(f"{', '.join(existing)} already exist(s) in {out}; --force overwrites")
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}")
    missing = [f"{secret} ({what})" for secret, what, arn in (
        ("AWS_PLAN_ROLE_ARN", "a read-only role for pull requests", roles.plan_role_arn),
        ("AWS_APPLY_ROLE_ARN", "the role that applies merges, trusted for the production environment only",
         roles.apply_role_arn),
    ) if arn is None]  # fmt: skip
    if missing:
        click.echo(f"next: add the repository secret(s) {'; '.join(missing)}, or set deploy.ci in {fleet}; "
                   "then commit the files")  # fmt: skip
    else:
        click.echo(f"roles from {fleet} (deploy.ci): plan {roles.plan_role_arn}, apply {roles.apply_role_arn}")


def _roles(path: Path):
    """deploy.ci of the fleet file, if there is one: the plan and apply roles (unset: repository secrets)."""
    from modelfleet.config.deploy import CIRoles

    if not path.is_file():
        return CIRoles()
    from modelfleet.config.loader import parse_fleet
    from modelfleet.deploy.source import _env_or_placeholders
    from modelfleet.errors import ConfigError

    text = path.read_text(encoding="utf-8")
    try:  # the pipeline needs no secret: unset ${VARS} are checked with placeholders, as `deploy aws` does
        fleet = parse_fleet(text, file=str(path), env=_env_or_placeholders(text))
    except ConfigError as exc:
        click.echo(click.style("config error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    return fleet.deploy.ci if fleet.deploy is not None else CIRoles()
