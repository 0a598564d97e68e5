"""Per-team namespaces: a ResourceQuota (GPUs included), a LimitRange, and NetworkPolicies so a team's pods
reach only the gateway.

A team's namespace is `team-<team>`, made a DNS label deterministically (lower case, anything but a-z, 0-9 and
`-` becomes `-`, at most 63 characters); two teams that come out the same (Team_A and team-a) are a config
error naming both, never one namespace shared by accident. Kubernetes deployments placed there count
against its quota, which is what they need at full scale, plus one more pod of each (rollout headroom,
below), plus a small allowance for the team's own pods (notebooks, jobs, apps). Model servers there take
traffic from the gateway only, and reach out only on 443 (to fetch weights).

Rollout headroom: a quota counts a terminating pod until it is gone. A CPU model server rolls with
maxSurge 1 (the new pod first); a GPU one with maxSurge 0 (no spare GPU node is assumed), but its old
pod still counts while it drains for up to terminationGracePeriodSeconds, and so does a stopped pod
when a wake scales the Deployment up again. Without one pod's worth of headroom the ReplicaSet is
refused ("exceeded quota", a ReplicaFailure the control plane reports) until the old pod has left.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from modelfleet.deploy.k8s import quantity
from modelfleet.deploy.k8s.options import GATEWAY, PORT, Options, labels, selector
from modelfleet.deploy.k8s.source import Source
from modelfleet.errors import ConfigError

# What a team's namespace gets beyond its model servers (a job, a notebook, a sidecar).
ALLOWANCE_CPU, ALLOWANCE_MEMORY, ALLOWANCE_PODS = Decimal(4), quantity.parse("8Gi"), 10


def namespace_of(team: str, opts: Options) -> str:
    """An RFC 1123 label: what Kubernetes accepts as a namespace name."""
    name = re.sub(r"[^a-z0-9-]+", "-", (opts.team_namespace_prefix + team).lower())
    return re.sub(r"-{2,}", "-", name).strip("-")[:63].rstrip("-") or "team"


def label_value(value: str) -> str:
    """A label value: at most 63 of [A-Za-z0-9-_.], beginning and ending with a letter or digit."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63].strip("-_.")


def check(source: Source, opts: Options) -> None:
    """Two teams whose namespaces coincide would share one quota and one set of policies: refuse it."""
    seen: dict[str, str] = {}
    problems = []
    for team in sorted(source.fleet.teams):
        ns = namespace_of(team, opts)
        if ns in seen:
            problems.append(f"teams.{team}: its namespace {ns!r} (names made RFC 1123 labels: lower case, a-z 0-9 -, "
                            f"at most 63 characters) is also teams.{seen[ns]}'s; rename one of them")  # fmt: skip
        elif ns == opts.namespace:
            problems.append(f"teams.{team}: its namespace {ns!r} is the gateway's (--namespace); rename the team "
                            "or change --team-namespace-prefix")  # fmt: skip
        seen.setdefault(ns, team)
    if problems:
        raise ConfigError(problems, file=str(source.path))


def objects(source: Source, opts: Options, only: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for team in sorted(source.fleet.teams) if only is None else [only]:
        ns = namespace_of(team, opts)
        deps = [d for d in source.kubernetes.values() if d.namespace == ns]
        pods_of = {id(d): d.replicas + 1 for d in deps}  # its replicas, and one more during a rollout
        cpu = ALLOWANCE_CPU + sum((quantity.parse(d.resources.cpu) * pods_of[id(d)] for d in deps), Decimal(0))
        mem = ALLOWANCE_MEMORY + sum((quantity.parse(d.resources.memory) * pods_of[id(d)] for d in deps), Decimal(0))
        gpus = sum(d.gpus * pods_of[id(d)] for d in deps)
        pods = ALLOWANCE_PODS + sum(pods_of.values())
        meta: dict[str, Any] = {
            "namespace": ns,
            "labels": {**labels(ns, "team"), "modelfleet.dev/team": label_value(team)},
        }
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "labels": {**meta["labels"], "pod-security.kubernetes.io/enforce": "baseline"},
                },
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "team", **meta},
                "spec": {
                    "hard": {
                        "requests.cpu": quantity.cpu(cpu),
                        "limits.cpu": quantity.cpu(cpu),
                        "requests.memory": quantity.memory(mem),
                        "limits.memory": quantity.memory(mem),
                        "requests.nvidia.com/gpu": str(gpus),
                        "pods": str(pods),
                    }
                },
            }
        )
        out.append(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": "team", **meta},
                "spec": {
                    "limits": [
                        {
                            "type": "Container",
                            "default": {"cpu": "500m", "memory": "512Mi"},
                            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                        }
                    ]
                },
            }
        )
        out.extend(_policies(meta, opts, serves_models=bool(deps)))
    return out


def _policies(meta: dict[str, Any], opts: Options, *, serves_models: bool) -> list[dict[str, Any]]:
    gateway = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": opts.namespace}},
        "podSelector": {"matchLabels": selector(GATEWAY)},
    }
    dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }

    def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, **meta},
            "spec": spec,
        }

    out = [
        policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        policy(
            "to-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [dns], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
            },
        ),
        policy(
            "to-gateway",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [gateway], "ports": [{"protocol": "TCP", "port": PORT}]}],
            },
        ),
    ]
    if serves_models:
        servers = {"matchLabels": {"app.kubernetes.io/component": "model-server"}}
        out.append(
            policy(
                "model-servers-from-gateway",
                {"podSelector": servers, "policyTypes": ["Ingress"], "ingress": [{"from": [gateway]}]},
            )
        )
        out.append(
            policy(
                "model-servers-fetch-weights",
                {
                    "podSelector": servers,
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"protocol": "TCP", "port": 443}]}],
                },
            )
        )
    return out
