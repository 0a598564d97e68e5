"""The Kubernetes API calls the `kubernetes` platform makes, through lightkube's async client.

Everything it touches, and so everything its Role must grant (config.kubernetes.RBAC_RULES, which
`modelfleet deploy k8s` renders; a test compares them with the calls a fake API server saw):

    apps/deployments             list, watch   follow the Deployment's spec.replicas, conditions, annotations
                                 patch         publish the desired state and the last request (annotations)
    apps/deployments/scale       patch         start (to `replicas`) and stop (to 0)
    discovery.k8s.io/endpointslices  list, watch   the pods' addresses and readiness
    coordination.k8s.io/leases   get, update   the Lease that makes one gateway pod the one that acts
                                 create        (once, if no pod has made it yet)

Why lightkube: typed models for every kind (lightkube-models tracks Kubernetes 1.37), async, small
(wheels of ~50 KB + ~350 KB), kubeconfig/in-cluster loading and `KubeConfig.from_dict` for a plain test
server; kubernetes_asyncio is a 3 MB generated client, and kr8s hands back untyped objects and brings
cryptography and python-box along.

Watches are informers: list (state and a resourceVersion), watch from there, and on any error or
expired version list again, so a missed event can never leave a stale address behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelfleet.config.kubernetes import KubernetesDeployment, lease_name, workload_name
from modelfleet.errors import ConfigError

log = logging.getLogger("modelfleet.control")

_RETRY, _RETRY_MAX = 1.0, 30.0  # between listings after an error, doubling while the API server stays away
# A watch asks the API server to end it after this long, and is abandoned (listed again) a little later if
# it has not ended: on a half-open connection (a NAT or load balancer that dropped it silently) nothing else
# would ever tell, and the pods' addresses would go stale for good.
WATCH_SECONDS = 290


class DeploymentMissing(Exception):
    """The Deployment is not in the cluster: its manifests were never applied."""


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """What the platform needs of a Deployment: its wanted replicas, and why its pods are failing, if they are."""

    replicas: int
    ready: int
    problem: str | None
    version: str = ""  # metadata.resourceVersion
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Endpoint:
    pod: str
    url: str  # the OpenAI base URL of the pod, http://ADDRESS:PORT/v1


class KubeAPI:
    def __init__(self, dep: KubernetesDeployment, deployment: str, watch_seconds: int = WATCH_SECONDS) -> None:
        self.dep = dep
        self.watch_seconds = watch_seconds
        self.deployment = deployment
        self.namespace = dep.namespace
        self.name = workload_name(deployment)
        self._client: Any = None
        try:
            import lightkube  # noqa: F401
        except ImportError:
            raise ConfigError([f"deployments.{deployment}: kind: kubernetes needs the Kubernetes client; "
                               "pip install 'modelfleet[kubernetes]'"]) from None  # fmt: skip

    def client(self) -> Any:
        if self._client is None:
            from lightkube import AsyncClient
            from lightkube import ConfigError as KubeConfigError

            try:
                config = self._config()
            except (KubeConfigError, OSError, KeyError) as exc:
                where = f"the kubeconfig {self.dep.kubeconfig}" if self.dep.kubeconfig else (
                    "in-cluster credentials (a service account) or $KUBECONFIG / ~/.kube/config")  # fmt: skip
                raise ConfigError([f"deployments.{self.deployment}: cannot load {where}: {exc}"]) from None
            self._client = AsyncClient(config, namespace=self.namespace, field_manager="modelfleet")
            logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per call and watch otherwise
        return self._client

    def _config(self) -> Any:
        from lightkube import KubeConfig

        if self.dep.api_url:
            config = KubeConfig.from_dict({  # no credentials: a test server, or `kubectl proxy`
                "clusters": [{"name": "api", "cluster": {"server": self.dep.api_url}}],
                "users": [{"name": "anonymous", "user": {}}],
                "contexts": [{"name": "api", "context": {"cluster": "api", "user": "anonymous"}}],
                "current-context": "api",
            })  # fmt: skip
        elif self.dep.kubeconfig:
            config = KubeConfig.from_file(self.dep.kubeconfig)
        else:  # in a pod: its service account; elsewhere $KUBECONFIG or ~/.kube/config
            config = KubeConfig.from_env()
        return config.get(context_name=self.dep.context) if self.dep.context else config

    @property
    def where(self) -> str:
        return f"Deployment {self.namespace}/{self.name}"

    async def scale(self, replicas: int) -> str:
        """Set spec.replicas through the scale subresource; the Deployment's new resourceVersion."""
        from lightkube.resources.apps_v1 import Deployment

        return await self._patch(Deployment.Scale, {"spec": {"replicas": replicas}})

    async def annotate(self, annotations: dict[str, str]) -> str:
        """Merge annotations into the Deployment's metadata (how gateway pods share what they know); its new
        resourceVersion."""
        from lightkube.resources.apps_v1 import Deployment

        return await self._patch(Deployment, {"metadata": {"annotations": annotations}})

    async def _patch(self, resource: Any, body: dict[str, Any]) -> str:
        """A merge patch of the Deployment (or its scale subresource); the new resourceVersion."""
        from lightkube import ApiError
        from lightkube.types import PatchType

        try:
            patched = await self.client().patch(resource, self.name, body, namespace=self.namespace,
                                                patch_type=PatchType.MERGE)  # fmt: skip
        except ApiError as exc:
            if exc.status.code == 404:
                raise DeploymentMissing(self.where) from None
            raise
        return str(patched.metadata.resourceVersion or "")

    @property
    def lease_name(self) -> str:
        return lease_name(self.deployment)

    async def get_lease(self) -> Any | None:
        """The deployment's Lease (coordination.k8s.io/v1), or None when no gateway pod has made it yet."""
        from lightkube import ApiError
        from lightkube.resources.coordination_v1 import Lease

        try:
            return await self.client().get(Lease, self.lease_name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    async def write_lease(self, lease: Any | None, spec: dict[str, Any]) -> bool:
        """Create the Lease, or update it if nobody wrote it since we read it; False: another pod was first."""
        from lightkube import ApiError
        from lightkube.models.coordination_v1 import LeaseSpec
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.coordination_v1 import Lease

        try:
            if lease is None:
                meta = ObjectMeta(name=self.lease_name, namespace=self.namespace,
                                  labels={"app.kubernetes.io/managed-by": "modelfleet"})  # fmt: skip
                await self.client().create(Lease(metadata=meta, spec=LeaseSpec(**spec)))
            else:  # a PUT carrying the resourceVersion we read: the API server refuses it (409) if it changed
                lease.spec = LeaseSpec(**spec)
                await self.client().replace(lease)
        except ApiError as exc:
            if exc.status.code == 409:  # AlreadyExists or Conflict: someone else wrote it first
                return False
            raise
        return True

    async def follow_deployment(self, seen: Callable[[DeploymentView | None], None]) -> None:
        """Tell `seen` the Deployment's state (None: it does not exist) on every change, forever."""
        from lightkube.resources.apps_v1 import Deployment

        fields = {"metadata.name": self.name}
        await self._inform(Deployment, {"fields": fields}, lambda objs: seen(_view(objs[0]) if objs else None))

    async def follow_endpoints(self, seen: Callable[[list[Endpoint]], None]) -> None:
        """Tell `seen` the ready pod endpoints behind the Service (same name) on every change, forever."""
        from lightkube.resources.discovery_v1 import EndpointSlice

        labels = {"kubernetes.io/service-name": self.name}
        await self._inform(EndpointSlice, {"labels": labels}, lambda slices: seen(_ready_endpoints(slices)))

    async def _inform(self, res: Any, select: dict[str, Any], changed: Callable[[list[Any]], None]) -> None:
        kind = res.__name__
        retry = _RETRY
        while True:
            try:
                objs: dict[str, Any] = {}
                listing = self.client().list(res, namespace=self.namespace, **select)
                async for obj in listing:
                    objs[obj.metadata.name] = obj
                changed(list(objs.values()))
                retry = _RETRY
                version = listing.resourceVersion
                with contextlib.suppress(TimeoutError):  # abandoned: listed again below
                    async with asyncio.timeout(self.watch_seconds + min(30, self.watch_seconds)):
                        async for event, obj in self.client().watch(
                            res, namespace=self.namespace, resource_version=version, server_timeout=self.watch_seconds,
                            **select,
                        ):  # fmt: skip
                            if event == "DELETED":
                                objs.pop(obj.metadata.name, None)
                            else:
                                objs[obj.metadata.name] = obj
                            changed(list(objs.values()))
            except asyncio.CancelledError:
                raise
            except ConfigError as exc:  # no credentials: listing again will not help
                log.error("cannot watch %s %s/%s: %s", kind, self.namespace, self.name, exc)
                return
            except Exception as exc:  # the API server restarted, a version expired, a network blip: list again
                log.warning("watching %s %s/%s: %s; listing again in %gs", kind, self.namespace, self.name,
                            _short(exc), retry)  # fmt: skip
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _view(deployment: Any) -> DeploymentView:
    spec, status = deployment.spec, deployment.status
    problem = None
    for c in status.conditions if status and status.conditions else []:
        # ReplicaFailure: pods cannot be created (a quota, a missing service account).
        # Progressing=False: pods did not turn ready within progressDeadlineSeconds.
        if (c.type == "ReplicaFailure" and c.status == "True") or (c.type == "Progressing" and c.status == "False"):
            problem = f"{c.reason}: {c.message}" if c.message else str(c.reason)
    wanted = spec.replicas if spec and spec.replicas is not None else 1
    ready = (status.readyReplicas or 0) if status else 0
    meta = deployment.metadata
    return DeploymentView(wanted, ready, problem, str(meta.resourceVersion or ""), dict(meta.annotations or {}))


def _ready_endpoints(slices: list[Any]) -> list[Endpoint]:
    found: dict[str, Endpoint] = {}
    for s in slices:
        ports = [p for p in s.ports or [] if p.port]
        if not ports:
            continue
        port = next((p.port for p in ports if p.name == "http"), ports[0].port)
        for e in s.endpoints or []:
            ready = e.conditions.ready if e.conditions and e.conditions.ready is not None else True  # nil = ready
            if not ready or not e.addresses:
                continue
            address = e.addresses[0]
            host = f"[{address}]" if s.addressType == "IPv6" else address
            pod = e.targetRef.name if e.targetRef and e.targetRef.name else f"{address}:{port}"
            found[pod] = Endpoint(pod, f"http://{host}:{port}/v1")
    return [found[k] for k in sorted(found)]


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."
