"""A fake Kubernetes API server over real HTTP, for what the `kubernetes` platform uses, in the real wire format.

    python -m modelfleet.testing.fake_kube --port 0 [--manifests all.yaml] [--ready-after 0.3] [--grace 2]

    apps/v1 deployments                 GET (get, list, ?watch=true), PATCH (merge or strategic merge)
    apps/v1 deployments/{name}/scale    GET, PATCH, PUT (autoscaling/v1 Scale)
    apps/v1 deployments/{name}/status   GET
    discovery.k8s.io/v1 endpointslices  GET (list, ?watch=true): one slice per pod, as the pods have their own ports
    coordination.k8s.io/v1 leases       POST (create: 409 AlreadyExists), GET, PUT (update: 409 Conflict when
                                        metadata.resourceVersion is not the current one, as optimistic locking)

Watches stream `{"type": ADDED|MODIFIED|DELETED, "object": ...}` lines; without a resourceVersion they
begin with the current objects as ADDED, with one they replay every later change (resourceVersions are
one counter, as etcd's revision is). Errors are `Status` objects (404 NotFound, 422 Invalid).

Pods are fake OpenAI servers (modelfleet.testing.fake_upstream) on 127.0.0.1, one free port each, so
requests really flow. A scaled-up pod turns ready after `ready_after` seconds (never, when null); a
scaled-down one is terminating (ready false, serving true) for `grace` seconds, still answering what it
serves, and then gone. Tests steer it on /fake/...:

    POST /fake/deployments  {"namespace", "name", "replicas": 0, "ready_after": 0.3, "grace": 2,
                             "upstream": {"delay": 0, "chunk_delay": 0, ...}}    seed a Deployment
    POST /fake/ready        {"namespace", "name", "ready": true}   make its pods ready (or unready)
    POST /fake/fail         {"namespace", "name", "reason", "message"}   a Progressing=False condition
    POST /fake/drop-watches [?compact=true]   end every watch stream (and expire the versions they had)
    GET  /fake/calls        every request as {"verb", "group", "resource", "namespace"} (for RBAC checks)
    GET  /fake/pods         the pods, their ports, ready and terminating flags, and requests served
    GET  /fake/writes       every successful write as {"verb", "resource", "name", "holder"} (the Lease holder
                            at the time: which gateway pod acted)
    POST /fake/faults       {"method": "GET", "path": "leases", "times": 1, "delay": 0.5, "status": 500}: the next
                            `times` matching API calls (path ends with `path`; only watches or no watches with
                            "watch": true|false) wait `delay` seconds before they are served (a hung connection,
                            when long), then answer `status` as a Status error (when given) instead
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from modelfleet.testing import fake_upstream

READY_LINE = "FAKE_KUBE_READY"
SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass
class Pod:
    name: str
    server: asyncio.base_events.Server
    behaviour: fake_upstream.Behaviour
    ready: bool = False
    terminating: bool = False

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]


@dataclass
class Workload:
    """A Deployment and what the cluster would make of it: pods, and their EndpointSlices."""

    obj: dict[str, Any]
    ready_after: float | None = 0.3
    grace: float = 2.0
    upstream: dict[str, Any] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    failure: dict[str, str] | None = None
    serial: int = 0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json(obj: Any, status: int = 200) -> web.Response:
    """As the API server answers: `Content-Type: application/json`, no charset (clients compare it exactly)."""
    return web.Response(body=json.dumps(obj).encode(), status=status, content_type="application/json")


def status_error(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}  # fmt: skip
    return _json(body, status=code)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch (enough of strategic merge for the fields modelfleet patches)."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


def _selected(obj: dict[str, Any], labels: str | None, fields: str | None) -> bool:
    for selector, source in ((labels, obj["metadata"].get("labels") or {}), (fields, None)):
        for term in (selector or "").split(","):
            if not term:
                continue
            key, _, want = term.partition("=")
            key, want = key.rstrip("="), want.lstrip("=")
            if source is not None:
                got = source.get(key)
            else:
                got = obj
                for part in key.split("."):
                    got = got.get(part) if isinstance(got, dict) else None
            if got != want:
                return False
    return True


class FakeCluster:
    def __init__(self) -> None:
        self.version = 0
        self.workloads: dict[tuple[str, str], Workload] = {}
        self.slices: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> EndpointSlice
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (version, resource, type, object)
        self.calls: list[dict[str, str]] = []
        self.writes: list[dict[str, Any]] = []
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.changed = asyncio.Condition()
        self.drops = 0  # bumped to end every open watch (an API server restart, a load balancer timeout)
        self.compacted = 0  # watches from a resourceVersion before this one get 410 Expired
        self._timers: set[asyncio.Task[None]] = set()
        self.faults: list[dict[str, Any]] = []  # injected by tests: slow answers and error codes

    # ---- the store: every write bumps the one version counter and is kept for watches
    async def _record(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.events.append((self.version, resource, kind, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()

    def _later(self, delay: float, coro_fn: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await coro_fn()

        task = asyncio.get_running_loop().create_task(run())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    # ---- Deployments
    async def seed(self, spec: dict[str, Any]) -> Workload:
        ns, name = spec["namespace"], spec["name"]
        template = spec.get("object") or {}
        labels = template.get("metadata", {}).get("labels") or {"app.kubernetes.io/name": name}
        obj: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "generation": 1,
                         "creationTimestamp": _now(), "labels": labels},
            "spec": template.get("spec") or {"selector": {"matchLabels": labels},
                                             "template": {"metadata": {"labels": labels}, "spec": {"containers": []}}},
        }  # fmt: skip
        obj["spec"]["replicas"] = spec.get("replicas", obj["spec"].get("replicas", 1))
        w = Workload(obj, spec.get("ready_after", 0.3), spec.get("grace", 2.0), spec.get("upstream") or {})
        self.workloads[(ns, name)] = w
        await self._reconcile(w)
        return w

    def _status(self, w: Workload) -> dict[str, Any]:
        live = [p for p in w.pods if not p.terminating]
        ready = sum(p.ready for p in live)
        wanted = w.obj["spec"]["replicas"]
        available = ready >= wanted
        conditions = [{"type": "Available", "status": "True" if available else "False",
                       "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                       "lastUpdateTime": _now(), "lastTransitionTime": _now()}]  # fmt: skip
        if w.failure:
            conditions.append({"type": "Progressing", "status": "False", "lastUpdateTime": _now(),
                               "lastTransitionTime": _now(), **w.failure})  # fmt: skip
        else:
            done = f'ReplicaSet "{w.obj["metadata"]["name"]}" has successfully progressed.'
            conditions.append({"type": "Progressing", "status": "True", "lastUpdateTime": _now(),
                               "lastTransitionTime": _now(), "reason": "NewReplicaSetAvailable",
                               "message": done})  # fmt: skip
        status = {"observedGeneration": w.obj["metadata"]["generation"], "replicas": len(live),
                  "updatedReplicas": len(live), "readyReplicas": ready, "availableReplicas": ready,
                  "conditions": conditions}  # fmt: skip
        if len(live) - ready:
            status["unavailableReplicas"] = len(live) - ready
        return status

    async def _reconcile(self, w: Workload) -> None:
        """Pods to match spec.replicas, then status and EndpointSlices to match the pods."""
        ns, name = w.obj["metadata"]["namespace"], w.obj["metadata"]["name"]
        live = [p for p in w.pods if not p.terminating]
        for _ in range(w.obj["spec"]["replicas"] - len(live)):
            w.serial += 1
            pod = await self._start_pod(f"{name}-{w.serial:05d}", w.upstream)
            w.pods.append(pod)
            if w.ready_after is not None:
                self._later(w.ready_after, lambda p=pod: self._set_ready(w, p, True))
        for pod in live[w.obj["spec"]["replicas"] :] if w.obj["spec"]["replicas"] < len(live) else []:
            pod.terminating, pod.ready = True, False
            self._later(w.grace, lambda p=pod: self._remove(w, p))
        w.obj["status"] = self._status(w)
        await self._record("deployments", "MODIFIED" if "resourceVersion" in w.obj["metadata"] else "ADDED", w.obj)
        await self._sync_slices(ns, name, w)

    async def _start_pod(self, name: str, upstream: dict[str, Any]) -> Pod:
        args = fake_upstream.parser().parse_args(["--model", name])
        for k, v in upstream.items():
            setattr(args, k, v)
        behaviour = fake_upstream.Behaviour(args)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: fake_upstream.FakeOpenAI(behaviour), "127.0.0.1", 0)
        return Pod(name, server, behaviour)

    async def _set_ready(self, w: Workload, pod: Pod, ready: bool) -> None:
        if pod.terminating or pod not in w.pods or pod.ready == ready:
            return
        pod.ready = ready
        w.obj["status"] = self._status(w)
        await self._record("deployments", "MODIFIED", w.obj)
        await self._sync_slices(w.obj["metadata"]["namespace"], w.obj["metadata"]["name"], w)

    async def _remove(self, w: Workload, pod: Pod) -> None:
        pod.server.close()  # no new connections; requests in flight finish on theirs
        if pod in w.pods:
            w.pods.remove(pod)
        await self._sync_slices(w.obj["metadata"]["namespace"], w.obj["metadata"]["name"], w)

    async def _sync_slices(self, ns: str, service: str, w: Workload) -> None:
        wanted = {f"{p.name}-slice": p for p in w.pods}
        mine = [k for k, s in self.slices.items() if k[0] == ns and k[1] not in wanted
                and s["metadata"].get("labels", {}).get(SERVICE_LABEL) == service]  # fmt: skip
        for key in mine:
            await self._record("endpointslices", "DELETED", self.slices.pop(key))
        for slice_name, pod in wanted.items():
            endpoint = {
                "addresses": ["127.0.0.1"],
                "conditions": {"ready": pod.ready, "serving": pod.ready or pod.terminating,
                               "terminating": pod.terminating},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod.name},
            }  # fmt: skip
            old = self.slices.get((ns, slice_name))
            if old is not None and old["endpoints"] == [endpoint]:
                continue
            obj = old or {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": slice_name, "namespace": ns, "uid": str(uuid.uuid4()),
                             "creationTimestamp": _now(),
                             "labels": {SERVICE_LABEL: service,
                                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                "ports": [{"name": "http", "port": pod.port, "protocol": "TCP"}],
            }  # fmt: skip
            obj["endpoints"] = [endpoint]
            self.slices[(ns, slice_name)] = obj
            await self._record("endpointslices", "MODIFIED" if old else "ADDED", obj)

    def scale_of(self, w: Workload) -> dict[str, Any]:
        meta = w.obj["metadata"]
        labels = ",".join(f"{k}={v}" for k, v in sorted(w.obj["spec"]["selector"]["matchLabels"].items()))
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
                "spec": {"replicas": w.obj["spec"]["replicas"]},
                "status": {"replicas": w.obj["status"]["replicas"], "selector": labels}}  # fmt: skip

    async def set_replicas(self, w: Workload, replicas: int) -> None:
        if replicas != w.obj["spec"]["replicas"]:
            w.obj["metadata"]["generation"] += 1
            w.failure = None  # a new rollout starts progressing again
        w.obj["spec"]["replicas"] = replicas
        await self._reconcile(w)

    async def close(self) -> None:
        for task in list(self._timers):
            task.cancel()
        for w in self.workloads.values():
            for pod in w.pods:
                pod.server.close()


def build_app(cluster: FakeCluster) -> web.Application:
    def record(request: web.Request, verb: str, group: str, resource: str) -> None:
        ns = request.match_info.get("ns", "")
        cluster.calls.append({"verb": verb, "group": group, "resource": resource, "namespace": ns})

    def write(request: web.Request, verb: str, resource: str, **extra: Any) -> None:
        ns = request.match_info.get("ns", "")
        holders = [(lease.get("spec") or {}).get("holderIdentity") for (n, _), lease in cluster.leases.items()
                   if n == ns]  # fmt: skip
        cluster.writes.append({"verb": verb, "resource": resource, "namespace": ns,
                               "holder": holders[0] if len(holders) == 1 else None, **extra})  # fmt: skip

    def workload(request: web.Request) -> Workload | None:
        return cluster.workloads.get((request.match_info["ns"], request.match_info["name"]))

    def not_found(request: web.Request, resource: str = "deployments") -> web.Response:
        name = request.match_info["name"]
        return status_error(404, "NotFound", f'{resource}.apps "{name}" not found', name=name, group="apps",
                            kind=resource)  # fmt: skip

    async def collection(request: web.Request, resource: str, group: str) -> web.StreamResponse:
        ns = request.match_info["ns"]
        q = request.query
        watching = q.get("watch") in ("true", "1")
        record(request, "watch" if watching else "list", group, resource)
        labels, fields = q.get("labelSelector"), q.get("fieldSelector")

        def current() -> list[dict[str, Any]]:
            objs = ([w.obj for w in cluster.workloads.values()] if resource == "deployments"
                    else list(cluster.slices.values()))  # fmt: skip
            return [copy.deepcopy(o) for o in objs if o["metadata"]["namespace"] == ns and _selected(o, labels, fields)]

        if not watching:
            kind = "DeploymentList" if resource == "deployments" else "EndpointSliceList"
            api = "apps/v1" if resource == "deployments" else "discovery.k8s.io/v1"
            items = sorted(current(), key=lambda o: o["metadata"]["name"])
            meta = {"resourceVersion": str(cluster.version)}
            return _json({"kind": kind, "apiVersion": api, "metadata": meta, "items": items})
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        since = q.get("resourceVersion")
        drops = cluster.drops
        if since and since != "0" and int(since) < cluster.compacted:
            expired = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
                       "message": f"too old resource version: {since} ({cluster.compacted})", "code": 410}  # fmt: skip
            await resp.write(json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n")
            await resp.write_eof()
            return resp
        if not since or since == "0":
            for obj in current():
                await resp.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            seen = cluster.version
        else:
            seen = int(since)
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while time.monotonic() < deadline and cluster.drops == drops:
                for version, res, kind, obj in [e for e in cluster.events if e[0] > seen]:
                    seen = version
                    if res == resource and obj["metadata"]["namespace"] == ns and _selected(obj, labels, fields):
                        await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                async with cluster.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(cluster.changed.wait(), max(0.0, deadline - time.monotonic()))
            await resp.write_eof()
        return resp

    async def deployments(request: web.Request) -> web.StreamResponse:
        return await collection(request, "deployments", "apps")

    async def endpointslices(request: web.Request) -> web.StreamResponse:
        return await collection(request, "endpointslices", "discovery.k8s.io")

    async def get_deployment(request: web.Request) -> web.Response:
        record(request, "get", "apps", "deployments")
        w = workload(request)
        return _json(w.obj) if w else not_found(request)

    async def patch_deployment(request: web.Request) -> web.Response:
        record(request, "patch", "apps", "deployments")
        w = workload(request)
        if w is None:
            return not_found(request)
        patch = await request.json()
        before = w.obj["spec"]["replicas"]
        annotations = (patch.get("metadata") or {}).get("annotations")
        if annotations:  # the only metadata a patch changes here
            _merge(w.obj["metadata"].setdefault("annotations", {}), annotations)
        _merge(w.obj, {k: v for k, v in patch.items() if k not in ("status", "metadata")})
        write(request, "patch", "deployments")
        after, w.obj["spec"]["replicas"] = w.obj["spec"]["replicas"], before
        await cluster.set_replicas(w, after)
        return _json(w.obj)

    async def get_status(request: web.Request) -> web.Response:
        record(request, "get", "apps", "deployments/status")
        w = workload(request)
        return _json(w.obj) if w else not_found(request)

    async def scale(request: web.Request) -> web.Response:
        verb = {"GET": "get", "PATCH": "patch", "PUT": "update"}[request.method]
        record(request, verb, "apps", "deployments/scale")
        w = workload(request)
        if w is None:
            return not_found(request)
        if request.method != "GET":
            body = await request.json()
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                return status_error(422, "Invalid", f"Scale.autoscaling \"{w.obj['metadata']['name']}\" is invalid: "
                                    "spec.replicas: Invalid value: must be greater than or equal to 0")  # fmt: skip
            await cluster.set_replicas(w, replicas)
            write(request, verb, "deployments/scale", replicas=replicas)
        return _json(cluster.scale_of(w))

    # ---- Leases: the objects themselves, with optimistic locking on metadata.resourceVersion
    def lease_conflict(name: str, reason: str, message: str) -> web.Response:
        return status_error(409, reason, message, name=name, group="coordination.k8s.io", kind="leases")

    async def create_lease(request: web.Request) -> web.Response:
        record(request, "create", "coordination.k8s.io", "leases")
        ns, body = request.match_info["ns"], await request.json()
        name = body["metadata"]["name"]
        if (ns, name) in cluster.leases:
            return lease_conflict(name, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
        body["metadata"] |= {"namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": _now()}
        cluster.version += 1
        body["metadata"]["resourceVersion"] = str(cluster.version)
        cluster.leases[(ns, name)] = body
        write(request, "create", "leases", name=name)
        return _json(body, status=201)

    async def get_lease(request: web.Request) -> web.Response:
        record(request, "get", "coordination.k8s.io", "leases")
        lease = cluster.leases.get((request.match_info["ns"], request.match_info["name"]))
        if lease is None:
            name = request.match_info["name"]
            return status_error(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found', name=name,
                                group="coordination.k8s.io", kind="leases")  # fmt: skip
        return _json(lease)

    async def update_lease(request: web.Request) -> web.Response:
        record(request, "update", "coordination.k8s.io", "leases")
        key = (request.match_info["ns"], request.match_info["name"])
        body, lease = await request.json(), cluster.leases.get(key)
        if lease is None:
            return status_error(404, "NotFound", f'leases.coordination.k8s.io "{key[1]}" not found', name=key[1])
        if body["metadata"].get("resourceVersion") != lease["metadata"]["resourceVersion"]:
            return lease_conflict(key[1], "Conflict", f'Operation cannot be fulfilled on leases.coordination.k8s.io '
                                  f'"{key[1]}": the object has been modified; please apply your changes to the '
                                  "latest version and try again")  # fmt: skip
        cluster.version += 1
        body["metadata"] = {**lease["metadata"], "resourceVersion": str(cluster.version)}
        cluster.leases[key] = body
        write(request, "update", "leases", name=key[1])
        return _json(body)

    # ---- the tests' own controls
    async def fake_seed(request: web.Request) -> web.Response:
        w = await cluster.seed(await request.json())
        return _json(w.obj)

    async def fake_ready(request: web.Request) -> web.Response:
        body = await request.json()
        w = cluster.workloads[(body["namespace"], body["name"])]
        for pod in list(w.pods):
            await cluster._set_ready(w, pod, bool(body.get("ready", True)))
        if body.get("ready", True):
            w.ready_after = 0.0  # pods started from now on turn ready at once too
        return _json({"pods": [p.name for p in w.pods]})

    async def fake_fail(request: web.Request) -> web.Response:
        body = await request.json()
        w = cluster.workloads[(body["namespace"], body["name"])]
        w.failure = {"reason": body.get("reason", "ProgressDeadlineExceeded"),
                     "message": body.get("message", "ReplicaSet has timed out progressing.")}  # fmt: skip
        w.obj["status"] = cluster._status(w)
        await cluster._record("deployments", "MODIFIED", w.obj)
        return _json(w.obj["status"])

    async def fake_drop_watches(request: web.Request) -> web.Response:
        """End every open watch; with ?compact=true, forget the history too (their versions then expire)."""
        cluster.drops += 1
        if request.query.get("compact") == "true":
            cluster.events.clear()
            # As etcd does: history up to now is gone (older versions get 410), and a list taken from
            # now on carries a version that is not.
            cluster.version += 1
            cluster.compacted = cluster.version
        async with cluster.changed:
            cluster.changed.notify_all()
        return _json({"drops": cluster.drops, "compacted": cluster.compacted})

    async def fake_calls(_: web.Request) -> web.Response:
        return _json(cluster.calls)

    async def fake_writes(_: web.Request) -> web.Response:
        return _json(cluster.writes)

    async def fake_pods(_: web.Request) -> web.Response:
        return _json([
            {"namespace": ns, "deployment": name, "pod": p.name, "port": p.port, "ready": p.ready,
             "terminating": p.terminating, "requests": p.behaviour.requests}
            for (ns, name), w in sorted(cluster.workloads.items()) for p in w.pods
        ])  # fmt: skip

    async def fake_faults(request: web.Request) -> web.Response:
        cluster.faults.append({"times": 1, "delay": 0.0, **await request.json()})
        return _json(cluster.faults)

    @web.middleware
    async def faults(request: web.Request, handler: Any) -> web.StreamResponse:
        for f in cluster.faults if not request.path.startswith("/fake/") else []:
            watch = request.query.get("watch") in ("true", "1")
            if (
                f["times"] > 0
                and f.get("method", request.method) == request.method
                and request.path.endswith(f.get("path", ""))
                and f.get("watch", watch) == watch
            ):
                f["times"] -= 1
                await asyncio.sleep(f["delay"])  # then served as the cluster is now (a slow API server)
                if f.get("status"):
                    code = int(f["status"])
                    return status_error(code, {409: "Conflict", 410: "Expired"}.get(code, "InternalError"),
                                        f"injected fault {code}")  # fmt: skip
                break
        return await handler(request)

    async def on_cleanup(_: web.Application) -> None:
        await cluster.close()

    app = web.Application(middlewares=[faults])
    app.router.add_post("/fake/faults", fake_faults)
    base = "/apis/apps/v1/namespaces/{ns}/deployments"
    app.router.add_get(base, deployments)
    app.router.add_get(base + "/{name}", get_deployment)
    app.router.add_patch(base + "/{name}", patch_deployment)
    app.router.add_get(base + "/{name}/status", get_status)
    app.router.add_route("*", base + "/{name}/scale", scale)
    app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", endpointslices)
    app.router.add_post("/fake/deployments", fake_seed)
    app.router.add_post("/fake/ready", fake_ready)
    app.router.add_post("/fake/fail", fake_fail)
    app.router.add_post("/fake/drop-watches", fake_drop_watches)
    app.router.add_get("/fake/calls", fake_calls)
    app.router.add_get("/fake/pods", fake_pods)
    app.router.add_get("/fake/writes", fake_writes)
    leases = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    app.router.add_post(leases, create_lease)
    app.router.add_get(leases + "/{name}", get_lease)
    app.router.add_put(leases + "/{name}", update_lease)
    app.on_cleanup.append(on_cleanup)
    return app


async def _seed_from_manifests(cluster: FakeCluster, path: str, ready_after: float | None, grace: float) -> None:
    """Every Deployment in a rendered manifest (e.g. `kubectl kustomize` output), as `kubectl apply` would make it."""
    import yaml

    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "Deployment"]
    for d in docs:
        meta = d["metadata"]
        await cluster.seed({"namespace": meta.get("namespace", "default"), "name": meta["name"], "object": d,
                            "replicas": d["spec"].get("replicas", 1), "ready_after": ready_after,
                            "grace": grace})  # fmt: skip


async def _serve(args: argparse.Namespace) -> None:
    cluster = FakeCluster()
    if args.manifests:
        await _seed_from_manifests(cluster, args.manifests, args.ready_after, args.grace)
    runner = web.AppRunner(build_app(cluster), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"{READY_LINE} port={port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m modelfleet.testing.fake_kube", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--manifests", help="a multi-document YAML file; its Deployments exist from the start")
    p.add_argument("--ready-after", type=float, default=0.3, help="seconds until a new pod is ready")
    p.add_argument("--grace", type=float, default=2.0, help="seconds a terminating pod keeps serving")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
