"""`modelfleet deploy k8s`: render the fleet file as a Kustomize tree (attached to the `deploy` group)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelfleet.cli.options import required_fleet_file
from modelfleet.errors import ConfigError


@click.command("k8s", short_help="Render the platform for Kubernetes as a Kustomize tree.")
@required_fleet_file
@click.option(
    "-o",
    "--out",
    "out",
    default="k8s",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the tree to (files a previous render left behind are removed).",
)
@click.option("--namespace", default="modelfleet", show_default=True, help="The gateway's namespace.")
@click.option(
    "--image", help="The modelfleet image (gateway, and the dev overlay's engine). Default: modelfleet:VERSION."
)
@click.option(
    "--team-namespace-prefix",
    default="team-",
    show_default=True,
    help="Team T's namespace is PREFIX + T; kubernetes deployments placed there count against its quota.",
)
@click.option(
    "--monitoring/--no-monitoring",
    default=True,
    show_default=True,
    help="Include components/monitoring (ServiceMonitor, PrometheusRule) in staging and prod; "
    "--no-monitoring for a cluster without the Prometheus Operator.",
)
def k8s(
    fleet_path: Path, out: Path, namespace: str, image: str | None, team_namespace_prefix: str, monitoring: bool
) -> None:
    """Render the whole platform for Kubernetes from one fleet file, as a Kustomize tree.

    \b
      base/               the gateway (Deployment, Service, PDB, HPA from 2 pods, probes on /healthz and
                          /readyz, a grace period longer than server.drain_timeout), the fleet file (and
                          the team files it includes) as a ConfigMap, a ServiceAccount with a Role
                          granting only what the control plane calls (a Lease elects the one gateway
                          pod that scales), one model server Deployment + Service per `kind: kubernetes`
                          deployment (a preStop hook drains it), per-team namespaces (quota with GPUs and
                          rollout headroom, limits, network policies)
      components/monitoring  ServiceMonitor and PrometheusRule (needs the Prometheus Operator's CRDs)
      overlays/dev        CPU only: the embedded engine instead of vLLM, one replica, Redis + PostgreSQL
      overlays/staging    the gateway autoscales 2-4; + components/monitoring
      overlays/prod       the gateway autoscales 3-12, two always up; + components/monitoring

    Secrets are never rendered: every ${VAR} in the fleet file is read from the Secret `modelfleet-env`
    (key VAR), and a secret written out in the file is refused. Rendering again gives identical bytes.

    \b
    Example:
      modelfleet deploy k8s -f fleet.yaml -o k8s/
      kubectl kustomize k8s/overlays/dev | kubectl apply -f -
    """
    from modelfleet.deploy import k8s as render

    opts = render.Options(
        namespace=namespace,
        team_namespace_prefix=team_namespace_prefix,
        monitoring=monitoring,
        **({"image": image} if image else {}),
    )
    try:
        source = render.read(fleet_path)
        files = render.render(source, opts)
    except ConfigError as exc:
        click.echo(click.style("config error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    render.write(files, out)
    click.echo(
        f"wrote {len(files)} files to {out}/ ({len(source.kubernetes)} model server(s), "
        f"{len(source.fleet.teams)} team namespace(s), overlays dev, staging, prod)"
    )
    store = source.fleet.state.store
    if store.startswith("sqlite") and source.state_var("store") is None:
        click.echo(
            "warning: state.store is SQLite: each gateway pod keeps its own keys and usage; "
            "take it from a ${VAR} and point that at PostgreSQL",
            err=True,
        )
    if source.env:
        keys = " ".join(f"--from-literal={v}=..." for v in source.env)
        click.echo(
            f"\nThe gateway reads {', '.join(source.env)} from the Secret modelfleet-env:\n"
            f"  kubectl -n {namespace} create secret generic modelfleet-env {keys}"
        )
    click.echo(
        f"\nNext:\n  kubectl kustomize {out}/overlays/dev        # look\n"
        f"  kubectl apply -k {out}/overlays/dev          # apply"
    )
