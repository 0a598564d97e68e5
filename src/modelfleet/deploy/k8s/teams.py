"""Per-team namespaces: a ResourceQuota (GPUs included), a LimitRange, and NetworkPolicies so a team's pods
reach only the gateway.

A team's namespace is `team-<team>`; kubernetes deployments placed there count against its quota, which is
what they need at full scale plus a small allowance for the team's own pods (notebooks, jobs, apps).
Model servers there take traffic from the gateway only, and reach out only on 443 (to fetch weights).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from modelfleet.config.kubernetes import workload_name
from modelfleet.deploy.k8s import quantity
from modelfleet.deploy.k8s.options import GATEWAY, PORT, Options, labels, selector
from modelfleet.deploy.k8s.source import Source

# What a team's namespace gets beyond its model servers (a job, a notebook, a sidecar).
ALLOWANCE_CPU, ALLOWANCE_MEMORY, ALLOWANCE_PODS = Decimal(4), quantity.parse("8Gi"), 10


def namespace_of(team: str, opts: Options) -> str:
    return (opts.team_namespace_prefix + workload_name(team))[:63]


def objects(source: Source, opts: Options) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for team in sorted(source.fleet.teams):
        ns = namespace_of(team, opts)
        deps = [d for d in source.kubernetes.values() if d.namespace == ns]
        cpu = ALLOWANCE_CPU + sum((quantity.parse(d.resources.cpu) * d.replicas for d in deps), Decimal(0))
        mem = ALLOWANCE_MEMORY + sum((quantity.parse(d.resources.memory) * d.replicas for d in deps), Decimal(0))
        gpus = sum(d.gpus * d.replicas for d in deps)
        pods = ALLOWANCE_PODS + sum(d.replicas for d in deps)
        meta: dict[str, Any] = {
            "namespace": ns,
            "labels": {**labels(f"team-{workload_name(team)}", "team"), "modelfleet.dev/team": team},
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
