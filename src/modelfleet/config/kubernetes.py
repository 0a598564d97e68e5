"""`kind: kubernetes`: a model server (vLLM by default) that modelfleet runs as a Kubernetes Deployment + Service.

`modelfleet deploy k8s` renders the Deployment and Service from these fields; at run time the control
plane only scales that Deployment (start: to `replicas`, stop: to 0) and follows its pods' EndpointSlices.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from modelfleet.config.schema import Duration, Health, LoadMetrics, Name, _Managed, _Section

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"

# What the control plane calls on a kubernetes deployment's namespace (control/platforms/kube_api.py), and so
# all its Role grants (deploy/k8s/rbac.py renders it): (API group, resource, verbs).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("apps", "deployments", ("list", "watch", "patch")),
    ("apps", "deployments/scale", ("patch",)),
    ("discovery.k8s.io", "endpointslices", ("list", "watch")),
    ("coordination.k8s.io", "leases", ("get", "update")),
    ("coordination.k8s.io", "leases", ("create",)),  # create cannot be limited to a name (RBAC has none yet)
)


class PodResources(_Section):
    """Per replica. Requests and limits are set alike (Guaranteed QoS), GPUs as nvidia.com/gpu."""

    cpu: str = Field("4", pattern=_QUANTITY, description="e.g. 4 or 500m")
    memory: str = Field("32Gi", pattern=_QUANTITY, description="e.g. 32Gi")


class Probe(_Section):
    """An HTTP probe on the model server's port."""

    path: str = Field("/health", pattern=r"^/")
    period_seconds: int = Field(10, ge=1, le=300)
    timeout_seconds: int = Field(5, ge=1, le=120)
    failure_threshold: int = Field(3, ge=1, le=1000)


class Toleration(_Section):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ModelCache(_Section):
    """Where downloaded weights live. Unset claim: an emptyDir per pod (downloaded again on every start)."""

    claim: str | None = Field(None, pattern=_DNS_LABEL, description="a PersistentVolumeClaim (ReadWriteMany)")
    storage_class: str | None = Field(None, description="set to render the claim too (else it must exist)")
    size: str = Field("100Gi", pattern=_QUANTITY)
    mount_path: str = Field("/root/.cache/huggingface", pattern=r"^/")


class SecretKeyRef(_Section):
    """A key of a Kubernetes Secret: rendered as a reference, never as a value."""

    name: str = Field(pattern=_DNS_LABEL)
    key: str = "token"


class KubernetesDeployment(_Managed):
    """A model server on Kubernetes: the Deployment `modelfleet deploy k8s` renders, scaled by the control plane."""

    kind: Literal["kubernetes"]
    namespace: str = Field("modelfleet", pattern=_DNS_LABEL, description="where its Deployment and Service live")
    image: str = Field(VLLM_IMAGE, description="an OpenAI-compatible server image; vLLM by default")
    model: str = Field(description="what the server loads: a Hugging Face id or a path in the model cache")
    quantization: Literal["awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "bitsandbytes"] | None = None
    dtype: Literal["auto", "float16", "bfloat16", "float32"] | None = None
    max_model_len: int | None = Field(None, ge=128)
    lora_modules: dict[Name, str] = Field({}, description="adapter name -> path or HF id (turns on --enable-lora)")
    adapter: Name | None = Field(None, description="send requests to this LoRA adapter (one of lora_modules)")
    args: list[str] = Field([], description="more server arguments, e.g. [--gpu-memory-utilization, '0.9']")
    env: dict[str, str] = {}
    hf_token_secret: SecretKeyRef | None = Field(None, description="the Secret (and key) holding HF_TOKEN")
    gpus: int = Field(1, ge=0, le=16, description="nvidia.com/gpu per replica")
    gpu_type: str | None = Field(None, description="nvidia.com/gpu.product node label, e.g. NVIDIA-A10G")
    resources: PodResources = PodResources()
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    model_cache: ModelCache | None = None
    port: int = Field(8000, ge=1, le=65535)
    startup_probe: Probe = Probe(period_seconds=10, failure_threshold=90)  # 15 minutes to download and load
    readiness_probe: Probe = Probe(period_seconds=5, failure_threshold=3)
    replicas: int = Field(1, ge=1, le=64)
    kubeconfig: Path | None = Field(None, description="unset: in-cluster service account, else $KUBECONFIG")
    context: str | None = Field(None, description="the kubeconfig context; default: its current one")
    api_url: str | None = Field(None, description="a plain API server URL without credentials; for tests")
    wake_timeout: Duration = Field(600.0, description="how long a waking request waits (pods take minutes)")
    drain_timeout: Duration = Field(
        120.0,
        description="how long a stopping pod waits for its requests in flight "
        "(vLLM's preStop hook) before the server is told to stop",
    )
    lease_duration: Duration = Field(
        15.0,
        description="gateway pods: how long the Lease holder's silence "
        "lasts before another pod takes over acting on this deployment",
    )
    reconcile_interval: Duration = Field(
        30.0,
        description="how often the Lease holder puts spec.replicas back to what it wants (someone scaled it by hand)",
    )
    max_concurrency: int | None = Field(None, ge=1, description="per replica; unset = unbounded")
    max_queue: int = Field(256, ge=0)
    health: Health = Health()
    load_metrics: LoadMetrics | None = Field(None, description="set to use vLLM's queue and KV-cache metrics")
    supports_embeddings: bool = False

    @field_validator("api_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8001, got {url!r}")
        return url.rstrip("/") if url else url

    @model_validator(mode="after")
    def _adapter_is_loaded(self) -> KubernetesDeployment:
        if self.adapter is not None and self.adapter not in self.lora_modules:
            known = ", ".join(sorted(self.lora_modules)) or "none"
            raise ValueError(f"the adapter {self.adapter!r} is not one of its lora_modules ({known})")
        return self

    @property
    def upstream_model(self) -> str | None:
        """The model name requests carry to the server: the adapter, else the name it serves (the deployment's)."""
        return self.adapter


def workload_name(deployment: str) -> str:
    """The Kubernetes name of a deployment's Deployment and Service: a DNS-1035 label made from its fleet name."""
    name = re.sub(r"[^a-z0-9-]+", "-", deployment.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "m-" + name
    return name[:63].rstrip("-")


def lease_name(deployment: str) -> str:
    """The coordination.k8s.io Lease that elects the one gateway pod acting on a deployment.

    Not cut to 63 characters: a Lease name is a DNS subdomain (up to 253), and two workload names that differ
    only near their end would share one Lease, so only one of the two deployments would ever have a holder.
    """
    return f"modelfleet-{workload_name(deployment)}"
