"""Assemble the Kustomize tree and write it. Same fleet file in, same bytes out (sorted keys, fixed order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelfleet.config.kubernetes import workload_name
from modelfleet.deploy.k8s import gateway, models, monitoring, overlays, rbac, teams
from modelfleet.deploy.k8s.options import FLEET_CONFIGMAP, INCLUDED, Options, fleet_files
from modelfleet.deploy.k8s.source import Source

HEADER = "# Rendered by `modelfleet deploy k8s` from the fleet file: change that and render again.\n"


def dump(docs: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=True, default_flow_style=False) for d in docs)


def render(source: Source, opts: Options) -> dict[str, str]:
    """Relative path -> file content. Raises ConfigError for what only rendering finds (team namespaces)."""
    teams.check(source, opts)
    files: dict[str, Any] = {
        "base/fleet.yaml": source.text,
        "base/gateway.yaml": gateway.objects(source, opts),
        # A Component, not base: base applies on a cluster without the Prometheus Operator's CRDs.
        "components/monitoring/monitoring.yaml": monitoring.objects(source, opts),
        "components/monitoring/kustomization.yaml": [monitoring.component()],
    }
    for rel, text in source.included.items():  # shipped as written, beside fleet.yaml in its ConfigMap
        files[f"base/{INCLUDED}/{rel}"] = text
    if source.kubernetes:
        files["base/rbac.yaml"] = rbac.objects(source, opts)
    team_namespaces = {teams.namespace_of(t, opts) for t in source.fleet.teams}
    extra = sorted({d.namespace for d in source.kubernetes.values()} - team_namespaces - {opts.namespace})
    if extra:
        files["base/models/namespaces.yaml"] = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"app.kubernetes.io/part-of": "modelfleet"}},
            }
            for ns in extra
        ]
    for name, dep in sorted(source.kubernetes.items()):
        files[f"base/models/{workload_name(name)}.yaml"] = models.objects(name, dep)
    for team in sorted(source.fleet.teams):
        files[f"base/teams/{teams.namespace_of(team, opts)}.yaml"] = teams.objects(source, opts, only=team)
    resources = sorted(
        p.removeprefix("base/")
        for p in files
        if p.startswith("base/")
        and p.endswith(".yaml")
        and p != "base/fleet.yaml"
        and not p.startswith(f"base/{INCLUDED}/")
    )
    files["base/kustomization.yaml"] = [
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
            # A changed fleet file gets a new ConfigMap name, so the gateway rolls out with it.
            "configMapGenerator": [
                {"name": FLEET_CONFIGMAP, "namespace": opts.namespace, "files": fleet_files(list(source.included))}
            ],
        }
    ]
    for overlay, tree in (
        ("dev", overlays.dev(source, opts)),
        ("staging", overlays.staging(opts)),
        ("prod", overlays.prod(opts)),
    ):
        for path, content in tree.items():
            files[f"overlays/{overlay}/{path}"] = content
    return {path: content if isinstance(content, str) else dump(content) for path, content in sorted(files.items())}


def write(files: dict[str, str], out: Path) -> list[Path]:
    """Write the tree; files an earlier render left that this one has not (a removed deployment) are deleted."""
    out.mkdir(parents=True, exist_ok=True)
    for part in ("base", "overlays", "components"):
        for old in sorted((out / part).rglob("*.y*ml")) if (out / part).exists() else []:
            if str(old.relative_to(out)) not in files:
                old.unlink()
    written = []
    for rel, content in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
