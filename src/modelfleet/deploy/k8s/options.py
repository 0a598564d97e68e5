"""What `modelfleet deploy k8s` is told besides the fleet file, and the names and labels it renders with."""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet import __version__

GATEWAY = "modelfleet-gateway"
SECRET = "modelfleet-env"  # every ${VAR} the fleet file names is a key of this Secret
FLEET_CONFIGMAP = "modelfleet-fleet"
INCLUDED = "included"  # the folder (in base/ and overlays/dev/) of the team files the fleet `include:`s
PORT = 8000
PRESTOP_SECONDS = 5  # endpoints controllers and kube-proxy take a moment to stop sending to a terminating pod


@dataclass(frozen=True)
class Options:
    namespace: str = "modelfleet"  # the gateway's
    image: str = f"modelfleet:{__version__}"  # no image is published: build one, push it, pass --image
    team_namespace_prefix: str = "team-"
    monitoring: bool = True  # staging and prod include components/monitoring (Prometheus Operator objects)


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "modelfleet",
        "app.kubernetes.io/managed-by": "modelfleet",
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def restricted() -> dict:
    """A container that cannot escalate: the Pod Security 'restricted' profile's fields."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def config_key(rel: str) -> str:
    """The fleet ConfigMap's key for an included file (keys cannot hold `/`; the volume maps it back to `rel`)."""
    return rel.replace("/", "__")


def fleet_files(included: list[str]) -> list[str]:
    """configMapGenerator `files`: the fleet file, and each included team file under its own key."""
    return ["fleet.yaml", *(f"{config_key(rel)}={INCLUDED}/{rel}" for rel in included)]
