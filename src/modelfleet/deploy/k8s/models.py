"""One model server per `kind: kubernetes` deployment: a Deployment (vLLM by default) and its Service.

spec.replicas is left out on purpose: the control plane owns it (it scales to `replicas` or to 0), so
re-applying the manifests never restarts a stopped model or stops a running one.
"""

from __future__ import annotations

from typing import Any

from modelfleet.config.kubernetes import KubernetesDeployment, workload_name
from modelfleet.deploy.k8s import drain
from modelfleet.deploy.k8s.options import labels, selector

GPU = "nvidia.com/gpu"


def server_args(name: str, dep: KubernetesDeployment) -> list[str]:
    """`vllm serve` arguments: the model, served as the deployment's name, and what the fleet file sets."""
    args = [dep.model, "--served-model-name", name, "--host", "0.0.0.0", "--port", str(dep.port)]
    if dep.quantization:
        args += ["--quantization", dep.quantization]
    if dep.dtype:
        args += ["--dtype", dep.dtype]
    if dep.max_model_len:
        args += ["--max-model-len", str(dep.max_model_len)]
    if dep.gpus > 1:
        args += ["--tensor-parallel-size", str(dep.gpus)]
    if dep.lora_modules:
        args += ["--enable-lora", "--lora-modules", *(f"{k}={v}" for k, v in dep.lora_modules.items())]
    return args + list(dep.args)


def _probe(p: Any) -> dict[str, Any]:
    return {
        "httpGet": {"path": p.path, "port": "http"},
        "periodSeconds": p.period_seconds,
        "timeoutSeconds": p.timeout_seconds,
        "failureThreshold": p.failure_threshold,
    }


def objects(name: str, dep: KubernetesDeployment) -> list[dict[str, Any]]:
    wl = workload_name(name)
    meta = {
        "name": wl,
        "namespace": dep.namespace,
        "labels": {**labels(wl, "model-server"), "modelfleet.dev/deployment": wl},
    }
    amount = {"cpu": dep.resources.cpu, "memory": dep.resources.memory}
    if dep.gpus:
        amount[GPU] = str(dep.gpus)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(dep.env.items())]
    cache = dep.model_cache
    mount = cache.mount_path if cache else "/root/.cache/huggingface"
    env.append({"name": "HF_HOME", "value": mount})
    if dep.hf_token_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": dep.hf_token_secret.name, "key": dep.hf_token_secret.key}},
            }
        )
    container = {
        "name": "server",
        "image": dep.image,
        "command": ["vllm", "serve"],
        "args": server_args(name, dep),
        "env": env,
        "ports": [{"name": "http", "containerPort": dep.port, "protocol": "TCP"}],
        "startupProbe": _probe(dep.startup_probe),
        "readinessProbe": _probe(dep.readiness_probe),
        "livenessProbe": _probe(dep.readiness_probe.model_copy(update={"failure_threshold": 6})),
        "resources": {"requests": dict(amount), "limits": dict(amount)},
        "lifecycle": drain.prestop(dep.port, dep.drain_timeout),  # requests in flight finish (drain.py)
        "securityContext": {"allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": "model-cache", "mountPath": mount}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if cache and cache.claim:
        cache_volume: dict[str, Any] = {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.claim}}
    else:
        cache_volume = {"name": "model-cache", "emptyDir": {"sizeLimit": cache.size if cache else "100Gi"}}
    node_selector = dict(dep.node_selector)
    if dep.gpu_type:
        node_selector["nvidia.com/gpu.product"] = dep.gpu_type
    tolerations = [t.model_dump(exclude_none=True) for t in dep.tolerations]
    if dep.gpus and not any(t.get("key") == GPU for t in tolerations):
        tolerations.append({"key": GPU, "operator": "Exists", "effect": "NoSchedule"})
    startup = dep.startup_probe.period_seconds * dep.startup_probe.failure_threshold
    pod: dict[str, Any] = {
        # A model server never calls the Kubernetes API: no token in the pod for a compromised engine to use.
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        # Longer than the preStop hook's drain, so the kubelet never cuts it short.
        "terminationGracePeriodSeconds": drain.grace_seconds(dep.drain_timeout),
        "volumes": [cache_volume, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}],
    }
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    # No spare GPU for a surge pod: replace one pod at a time.
    rolling = {"maxSurge": 0, "maxUnavailable": 1} if dep.gpus else {"maxSurge": 1, "maxUnavailable": 0}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector(wl)},
            "progressDeadlineSeconds": startup + 300,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
            "template": {"metadata": {"labels": meta["labels"]}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": selector(wl), "ports": [{"name": "http", "port": dep.port, "targetPort": "http"}]},
    }
    out = [deployment, service]
    if cache and cache.claim and cache.storage_class:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": cache.claim, "namespace": dep.namespace, "labels": meta["labels"]},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": cache.storage_class,
                    "resources": {"requests": {"storage": cache.size}},
                },
            }
        )
    return out
