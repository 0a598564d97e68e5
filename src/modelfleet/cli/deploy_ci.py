"""`modelfleet deploy ci`: write the CI pipeline of a fleet repository (attached to the `deploy` group)."""

from __future__ import annotations

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

    \b
      modelfleet deploy ci -f fleet.yaml --terraform-dir deploy/aws
    """
    from modelfleet.deploy.ci import CIOptions, render_ci

    try:
        opts = CIOptions(fleet=fleet, terraform_dir=terraform_dir, branch=branch, region=region, render=render)
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
    click.echo("next: add the repository secret AWS_ROLE_ARN (an IAM role for GitHub OIDC), then commit both files")
