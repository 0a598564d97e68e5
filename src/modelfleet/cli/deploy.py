"""`modelfleet deploy`: render what runs the fleet somewhere else, as files to review and apply."""

from __future__ import annotations

import click

from modelfleet.cli.deploy_ci import ci
from modelfleet.cli.deploy_k8s import k8s


@click.group()
def deploy() -> None:
    """Render what runs the fleet on a platform: files to review, diff and apply.

    \b
      modelfleet deploy k8s -f fleet.yaml -o k8s/   a Kustomize tree (base + dev/staging/prod overlays)
      modelfleet deploy ci -f fleet.yaml -o .       a CI pipeline: fmt, validate, plan, policy, apply
    """


deploy.add_command(k8s)
deploy.add_command(ci)
