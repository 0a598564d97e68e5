"""The gateway's Role in each namespace with kubernetes deployments: exactly the calls its control plane makes."""

from __future__ import annotations

from typing import Any

from modelfleet.config.kubernetes import RBAC_RULES, lease_name, workload_name
from modelfleet.deploy.k8s.options import GATEWAY, Options, labels
from modelfleet.deploy.k8s.source import Source


def objects(source: Source, opts: Options) -> list[dict[str, Any]]:
    by_namespace: dict[str, list[str]] = {}
    leases: dict[str, list[str]] = {}
    for name, dep in source.kubernetes.items():
        by_namespace.setdefault(dep.namespace, []).append(workload_name(name))
        leases.setdefault(dep.namespace, []).append(lease_name(name))
    out = []
    for ns, names in sorted(by_namespace.items()):
        meta = {"name": GATEWAY, "namespace": ns, "labels": labels(GATEWAY, "gateway")}
        rules = []
        for group, resource, verbs in RBAC_RULES:
            rule: dict[str, Any] = {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
            if resource.startswith("deployments"):  # its own Deployments only (watched by metadata.name)
                rule["resourceNames"] = sorted(names)
            elif resource == "leases" and "create" not in verbs:  # the one Lease per deployment
                rule["resourceNames"] = sorted(leases[ns])
            rules.append(rule)
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules})
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GATEWAY},
                "subjects": [{"kind": "ServiceAccount", "name": GATEWAY, "namespace": opts.namespace}],
            }
        )
    return out
