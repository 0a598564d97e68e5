"""The overlays, each a few plain patches on base:

dev      one gateway, no HPA/PDB; model servers on CPU running the embedded engine (SmolLM2) at one
         replica; small Redis and PostgreSQL StatefulSets for the state the fleet file takes from ${VARs}
staging  the gateway autoscales between 2 and 4
prod     between 3 and 12, two always up through disruptions, more CPU and memory per gateway
staging and prod also take components/monitoring (ServiceMonitor, PrometheusRule) unless --no-monitoring.

The gateway Deployment has no spec.replicas outside dev: its HPA owns the count (an applied replicas field
would reset what the HPA chose on every `kubectl apply`); dev has no HPA and one replica.
"""

from __future__ import annotations

from typing import Any

import yaml

from modelfleet.config.kubernetes import workload_name
from modelfleet.deploy.k8s.options import FLEET_CONFIGMAP, GATEWAY, INCLUDED, Options, fleet_files, labels, selector
from modelfleet.deploy.k8s.source import Source


def _kustomization(resources: list[str], patches: list[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "patches": [{"path": p} for p in patches],
        **(extra or {}),
    }


def _monitoring(opts: Options) -> dict[str, Any]:
    return {"components": ["../../components/monitoring"]} if opts.monitoring else {}


def _gateway_ref(kind: str, api: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": GATEWAY, "namespace": ns}}


def dev(source: Source, opts: Options) -> dict[str, Any]:
    """files (path -> objects, or text for fleet.yaml) of overlays/dev."""
    ns = opts.namespace
    urls = {
        "store": f"postgresql://modelfleet@postgres.{ns}.svc:5432/modelfleet",
        "counters": f"redis://redis.{ns}.svc:6379/0",
    }
    env = [
        {"name": var, "value": urls[what], "valueFrom": None}
        for what in ("store", "counters")
        if (var := source.state_var(what))
    ]
    gateway = _gateway_ref("Deployment", "apps/v1", ns)
    gateway["spec"] = {"replicas": 1, "template": {"spec": {"containers": [{"name": "gateway", "env": env}]}}}
    if not env:
        del gateway["spec"]["template"]
    files: dict[str, Any] = {
        "patches/gateway.yaml": [gateway],
        # One gateway: no autoscaler, and no disruption budget (with one pod it would block every node drain).
        # (A deleting patch has a file of its own: kustomize 5.5 crashes on two in one file.)
        "patches/no-hpa.yaml": [{**_gateway_ref("HorizontalPodAutoscaler", "autoscaling/v2", ns), "$patch": "delete"}],
        "patches/no-pdb.yaml": [{**_gateway_ref("PodDisruptionBudget", "policy/v1", ns), "$patch": "delete"}],
    }
    patches = ["patches/gateway.yaml", "patches/no-hpa.yaml", "patches/no-pdb.yaml"]
    for name, dep in source.kubernetes.items():
        wl = workload_name(name)
        server: dict[str, Any] = {
            "name": "server",
            "image": opts.image,
            "command": ["python", "-m", "modelfleet.engine"],
            "args": ["--name", name, "--host", "0.0.0.0", "--port", str(dep.port), "--threads", "2"],
            "resources": {
                "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": None},
                "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": None},
            },
            "startupProbe": {"httpGet": {"path": "/health"}, "failureThreshold": 60},
            "readinessProbe": {"httpGet": {"path": "/health"}},
            "livenessProbe": {"httpGet": {"path": "/health"}},
        }
        if dep.hf_token_secret:
            server["env"] = [{"name": "HF_TOKEN", "$patch": "delete"}]
        patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": wl, "namespace": dep.namespace},
            "spec": {
                "template": {
                    "spec": {
                        "nodeSelector": None,
                        "tolerations": None,
                        "containers": [server],
                        "volumes": [
                            {"name": "model-cache", "emptyDir": {"sizeLimit": "1Gi"}, "persistentVolumeClaim": None}
                        ],
                    }
                }
            },
        }
        files[f"patches/{wl}.yaml"] = [patch]
        patches.append(f"patches/{wl}.yaml")
        if dep.model_cache and dep.model_cache.claim and dep.model_cache.storage_class:
            files[f"patches/{wl}-no-cache-claim.yaml"] = [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "$patch": "delete",
                    "metadata": {"name": dep.model_cache.claim, "namespace": dep.namespace},
                }
            ]
            patches.append(f"patches/{wl}-no-cache-claim.yaml")
    resources = ["../../base"]
    if env:
        files["state.yaml"] = _state(ns)
        resources.append("state.yaml")
    files["fleet.yaml"] = _one_replica(source.text, "base/fleet.yaml")
    for rel, text in source.included.items():  # kustomize reads files only under the overlay: copies
        files[f"{INCLUDED}/{rel}"] = _one_replica(text, f"base/{INCLUDED}/{rel}")
    files["kustomization.yaml"] = [
        _kustomization(
            resources,
            patches,
            {
                "configMapGenerator": [
                    {
                        "name": FLEET_CONFIGMAP,
                        "namespace": ns,
                        "behavior": "replace",
                        "files": fleet_files(list(source.included)),
                    }
                ]
            },
        )
    ]
    return files


def _one_replica(text: str, was: str) -> str:
    """A fleet (or team) file with each kubernetes deployment it declares at one replica."""
    raw = yaml.safe_load(text)
    for dep in (raw.get("deployments") or {}).values():
        if isinstance(dep, dict) and dep.get("kind") == "kubernetes":
            dep["replicas"] = 1
    head = f"# {was} with every kubernetes deployment at one replica (rendered by modelfleet deploy k8s)\n"
    return head + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)


def staging(opts: Options) -> dict[str, Any]:
    hpa = _gateway_ref("HorizontalPodAutoscaler", "autoscaling/v2", opts.namespace)
    hpa["spec"] = {"minReplicas": 2, "maxReplicas": 4}
    return {
        "patches/autoscaling.yaml": [hpa],
        "kustomization.yaml": [_kustomization(["../../base"], ["patches/autoscaling.yaml"], _monitoring(opts))],
    }


def prod(opts: Options) -> dict[str, Any]:
    ns = opts.namespace
    hpa = _gateway_ref("HorizontalPodAutoscaler", "autoscaling/v2", ns)
    hpa["spec"] = {"minReplicas": 3, "maxReplicas": 12}
    pdb = _gateway_ref("PodDisruptionBudget", "policy/v1", ns)
    pdb["spec"] = {"minAvailable": 2}
    gateway = _gateway_ref("Deployment", "apps/v1", ns)
    gateway["spec"] = {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "gateway",
                        "resources": {
                            "requests": {"cpu": "1", "memory": "1Gi"},
                            "limits": {"cpu": "4", "memory": "2Gi"},
                        },
                    }
                ]
            }
        },
    }
    return {
        "patches/availability.yaml": [hpa, pdb],
        "patches/gateway.yaml": [gateway],
        "kustomization.yaml": [
            _kustomization(["../../base"], ["patches/availability.yaml", "patches/gateway.yaml"], _monitoring(opts))
        ],
    }


def _state(ns: str) -> list[dict[str, Any]]:
    """Dev-only Redis and PostgreSQL (trust auth, no password: nothing secret to render)."""

    def stateful(name: str, image: str, port: int, probe: list[str], env: list[dict[str, str]], data: str) -> list:
        meta = {"name": name, "namespace": ns, "labels": labels(name, "state")}
        check = {"exec": {"command": probe}, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 6}
        container = {
            "name": name,
            "image": image,
            "env": env,
            "ports": [{"name": name, "containerPort": port}],
            "readinessProbe": check,
            "livenessProbe": {**check, "initialDelaySeconds": 10},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            "volumeMounts": [{"name": "data", "mountPath": data}],
        }
        return [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": meta,
                "spec": {
                    "serviceName": name,
                    "replicas": 1,
                    "selector": {"matchLabels": selector(name)},
                    "template": {"metadata": {"labels": meta["labels"]}, "spec": {"containers": [container]}},
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                        }
                    ],
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"selector": selector(name), "ports": [{"name": name, "port": port, "targetPort": name}]},
            },
        ]

    pg_env = [
        {"name": "POSTGRES_USER", "value": "modelfleet"},
        {"name": "POSTGRES_DB", "value": "modelfleet"},
        {"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"},
        {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
    ]
    return [
        *stateful(
            "postgres",
            "postgres:16-alpine",
            5432,
            ["pg_isready", "-U", "modelfleet"],
            pg_env,
            "/var/lib/postgresql/data",
        ),
        *stateful("redis", "redis:7-alpine", 6379, ["redis-cli", "ping"], [], "/data"),
    ]
