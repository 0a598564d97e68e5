"""The gateway: Deployment (probes, resources, anti-affinity, graceful drain), Service, PDB, HPA, ServiceAccount."""

from __future__ import annotations

import math
from typing import Any

from modelfleet.deploy.k8s.options import (
    FLEET_CONFIGMAP,
    GATEWAY,
    PORT,
    PRESTOP_SECONDS,
    SECRET,
    Options,
    config_key,
    labels,
    restricted,
    selector,
)
from modelfleet.deploy.k8s.source import Source


def grace_seconds(source: Source) -> int:
    """preStop pause + server.drain_timeout (requests in flight finish) + a margin to exit."""
    return PRESTOP_SECONDS + math.ceil(source.fleet.server.drain_timeout) + 5


def env(source: Source) -> list[dict[str, Any]]:
    """Every ${VAR} of the fleet file from the Secret (optional where the file gives a default)."""
    out: list[dict[str, Any]] = [{"name": "MODELFLEET_HOME", "value": "/var/lib/modelfleet"}]
    for name, has_default in source.env.items():
        ref: dict[str, Any] = {"name": SECRET, "key": name}
        if has_default:
            ref["optional"] = True
        out.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return out


def _fleet_volume(source: Source) -> dict[str, Any]:
    """The ConfigMap as /etc/modelfleet: fleet.yaml, and the team files it includes at their relative paths."""
    if not source.included:
        return {"name": FLEET_CONFIGMAP}
    items = [{"key": "fleet.yaml", "path": "fleet.yaml"}]
    items += [{"key": config_key(rel), "path": rel} for rel in source.included]
    return {"name": FLEET_CONFIGMAP, "items": items}


def objects(source: Source, opts: Options) -> list[dict[str, Any]]:
    ns = opts.namespace
    meta = {"name": GATEWAY, "namespace": ns, "labels": labels(GATEWAY, "gateway")}
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    container = {
        "name": "gateway",
        "image": opts.image,
        "command": ["modelfleet"],
        "args": [
            "serve",
            "-f",
            "/etc/modelfleet/fleet.yaml",
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--log-format",
            "json",
        ],
        "env": env(source),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {**probe, "failureThreshold": 3},
        # Ready when every route can be answered (by a replica, a wake, or a fallback).
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "securityContext": restricted(),
        "volumeMounts": [
            {"name": "fleet", "mountPath": "/etc/modelfleet", "readOnly": True},
            {"name": "state", "mountPath": "/var/lib/modelfleet"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {  # no replicas: the HPA owns the count (at least 2; see overlays.py)
            "selector": {"matchLabels": selector(GATEWAY)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(GATEWAY, "gateway")},
                "spec": {
                    "serviceAccountName": GATEWAY,
                    "terminationGracePeriodSeconds": grace_seconds(source),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": selector(GATEWAY)},
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "fleet", "configMap": _fleet_volume(source)},
                        {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": selector(GATEWAY), "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(GATEWAY)}},
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": GATEWAY},
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"app.kubernetes.io/part-of": "modelfleet"}},
    }
    return [namespace, account, deployment, service, pdb, hpa]
