"""`modelfleet deploy`: render what runs the fleet somewhere else, as files to review and apply."""

from __future__ import annotations

import click

from modelfleet.cli.deploy_ci import ci
from modelfleet.cli.deploy_k8s import k8s
from modelfleet.cli.deploy_observability import observability


@click.group()
def deploy() -> None:
    """Render what runs the fleet on a platform: files to review, diff and apply.

    \b
      modelfleet deploy k8s -f fleet.yaml -o k8s/   a Kustomize tree (base + dev/staging/prod overlays)
      modelfleet deploy ci -f fleet.yaml -o .       a CI pipeline: fmt, validate, plan, policy, apply
      modelfleet deploy observability -f fleet.yaml -o obs/
                                                    Grafana dashboard, Prometheus alerts, OTEL collector
    """


deploy.add_command(k8s)
deploy.add_command(ci)
deploy.add_command(observability)
