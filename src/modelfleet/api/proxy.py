"""The hot path: authenticate, validate, resolve the route, take a replica, forward, relay, account.

    request -> gate.authenticate (401) -> validate(schema) -> route (404, 403 for another team's)
            -> gate.admit (429) -> candidates: the picked deployment, its route's others, fallbacks
            -> dispatcher.acquire() replica -> backend.send() / open_stream() -> rewrite, relay
            -> gate.finish (settle limits, usage ledger)

A failure before the first byte (refused, 5xx, timeout) is safe to retry, since the client has seen
nothing and generation has no side effects: first on another ready replica of the same deployment,
then on the route's other deployments and its `fallbacks`. A strict route (`fallbacks: none`) never
leaves its deployment and never waits for one that is starting: it fails at once, naming it.

Bodies are parsed once with orjson and forwarded as the client wrote them, but for `model`
(the route name becomes the upstream's name, and back) and `stream_options.include_usage`
(always asked of the upstream, so every stream is accounted; the usage chunk is dropped
again if the client did not ask for it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from pydantic import TypeAdapter

from modelfleet.access.directory import Caller
from modelfleet.access.gate import Gate
from modelfleet.api import schema
from modelfleet.api.sse import DONE, DONE_EVENT, SSEDecoder, event
from modelfleet.backends.base import Backend
from modelfleet.errors import (
    APIError,
    BodyTooLarge,
    InvalidRequest,
    ModelNotFound,
    Unavailable,
    UpstreamError,
)
from modelfleet.observability.access_log import AccessLog
from modelfleet.observability.metrics import GatewayMetrics
from modelfleet.routing.dispatch import Dispatcher
from modelfleet.routing.routes import WeightedChoice, sticky_point
from modelfleet.state.counters import Verdict
from modelfleet.types import Replica, Usage

REQUEST_ID = web.AppKey("request_id", str)
DEPLOYMENT_HEADER = "X-Modelfleet-Deployment"
_RETRY_PAUSE = 0.05
CLIENT_CLOSED = 499  # nginx's code for "client went away"; bounded like every status label


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    schema: TypeAdapter
    streams: bool


CHAT = Endpoint("/chat/completions", schema.CHAT, streams=True)
COMPLETIONS = Endpoint("/completions", schema.COMPLETION, streams=True)
EMBEDDINGS = Endpoint("/embeddings", schema.EMBEDDING, streams=False)


@dataclass(slots=True)
class Target:
    """The gateway's view of one deployment: how to reach it and how many may use it at once."""

    name: str
    kind: str
    upstream_model: str
    dispatcher: Dispatcher
    backend: Backend
    supports_embeddings: bool


@dataclass(slots=True)
class RouteEntry:
    name: str
    timeout: float
    choice: WeightedChoice
    sticky: str | None = None  # "user", or a header name
    strict: bool = False
    fallbacks: tuple[str, ...] = ()


@dataclass(slots=True)
class _Exchange:
    """What one request carries through its attempts."""

    request: web.Request
    endpoint: Endpoint
    route: RouteEntry
    body: dict
    rid: str
    started: float
    timeout: float
    stream: bool
    client_wants_usage: bool
    headers: dict[str, str]


class Proxy:
    def __init__(
        self,
        routes: dict[str, RouteEntry],
        targets: dict[str, Target],
        metrics: GatewayMetrics,
        gate: Gate,
        *,
        max_body_bytes: int,
        access_log: AccessLog | None = None,
        request_failed: Callable[[Replica, str], None] = lambda r, why: None,
        wake: Callable[[str], float] | None = None,
    ) -> None:
        self.routes = routes
        self.targets = targets
        self.metrics = metrics
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.request_failed = request_failed
        self.wake = wake  # starts a stopped deployment; returns how long to wait for it

    async def handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request[REQUEST_ID]
        route_name = deployment = variant = ""
        replica_box: list[Replica] = []
        status = 500
        usage: Usage | None = None
        ttft: float | None = None
        caller: Caller | None = None
        verdict: Verdict | None = None
        try:
            if self.gate.directory.enforcing:  # open mode skips even the call
                caller = await self.gate.authenticate(request.headers.get("Authorization"))
            body, size = await self._read_json(request)
            schema.validate(endpoint.schema, body)
            route = self.routes.get(body["model"])
            if route is None or (caller is not None and not caller.may_use(route.name)):
                if route is not None and caller is not None:
                    self.gate.allow(caller, route.name)  # raises 403: the route exists, but is not theirs
                available = ", ".join(self.gate.routes_for(caller, list(self.routes)))
                raise ModelNotFound(f"The model {body['model']!r} does not exist; available: {available}",
                                    param="model")  # fmt: skip
            route_name = route.name
            variant = route.choice.pick(self._sticky(route, request, body))
            timeout = route.timeout
            headers: dict[str, str] = {"X-Request-ID": rid}
            if caller is not None:
                if caller.timeout is not None:
                    timeout = min(timeout, caller.timeout)
                if caller.limited:
                    verdict = await self.gate.admit(caller, body, size, rid, endpoint.streams)
                    headers.update(self.gate.headers(caller, verdict))
            stream = endpoint.streams and body.get("stream") is True
            client_wants_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
            if stream:
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            ex = _Exchange(request, endpoint, route, body, rid, started, timeout, stream, client_wants_usage,
                           headers)  # fmt: skip
            candidates = self._candidates(route, variant, caller)
            errors: list[APIError] = []
            for i, target in enumerate(candidates):
                deployment = target.name
                try:
                    response, status, usage, ttft = await self._serve(
                        ex, target, replica_box, last=i == len(candidates) - 1
                    )
                    return response
                except (Unavailable, UpstreamError) as exc:
                    errors.append(exc)
            raise _exhausted(route, candidates, errors)
        except APIError as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(route_name, deployment, status, elapsed, ttft, usage)
            if route_name:
                prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                self.gate.finish(caller, verdict, route_name, deployment, variant, status == 200, prompt, completion)
            if self.access_log is not None:
                self.access_log.record(
                    rid,
                    request.method,
                    request.path,
                    status,
                    elapsed * 1000,
                    route_name,
                    deployment,
                    replica_box[-1].name if replica_box else "",
                )

    def _sticky(self, route: RouteEntry, request: web.Request, body: dict) -> float | None:
        if route.sticky is None:
            return None
        key = body.get("user") if route.sticky == "user" else request.headers.get(route.sticky)
        return sticky_point(route.name, key) if isinstance(key, str) and key else None

    def _candidates(self, route: RouteEntry, first: str, caller: Caller | None) -> list[Target]:
        """The deployments to try, in order: the pick, then (unless strict) the route's others and its fallbacks."""
        if route.strict or (not route.fallbacks and len(route.choice.by_weight) == 1):
            return [self.targets[first]]
        names = route.choice.order(first)
        for fb_name in route.fallbacks:
            fb = self.routes[fb_name]
            if caller is None or caller.may_use(fb_name):  # a fallback never crosses into another team's routes
                names += fb.choice.order(fb.choice.pick())
        seen: set[str] = set()
        return [self.targets[n] for n in names if not (n in seen or seen.add(n))]

    async def _serve(
        self, ex: _Exchange, target: Target, replica_box: list[Replica], *, last: bool
    ) -> tuple[web.StreamResponse, int, Usage | None, float | None]:
        """Answer from one deployment, retrying on its other replicas while nothing has reached the client."""
        if ex.endpoint is EMBEDDINGS and not target.supports_embeddings:
            raise InvalidRequest(
                f"route {ex.route.name!r} is served by deployment {target.name!r} ({target.kind}), "
                "which does not serve embeddings",
                param="model",
            )
        ex.body["model"] = target.upstream_model
        payload = orjson.dumps(ex.body)
        dispatcher = target.dispatcher
        stats = self.metrics.stats_for(ex.route.name, target.name)
        tried: list[Replica] = []
        same_again = False
        # Waiting for a starting replica beats failing, unless there is somewhere else to go.
        wait_starting = last and not ex.route.strict
        timeout = ex.timeout
        woken = False
        if self.wake is not None and dispatcher.stopped():
            timeout = self.wake(target.name)  # raises a 503 naming why, if it may not be woken now
            wait_starting = woken = True
        while True:
            try:
                replica = await dispatcher.acquire(timeout, () if same_again else tried, wait_starting)
            except Unavailable as exc:
                if not woken:
                    raise
                raise Unavailable(
                    f"deployment {target.name!r} is starting: this request woke it (wake_on_request) and it was "
                    f"not ready within wake_timeout {timeout:g}s; retry shortly",
                    retry_after=max(5.0, timeout / 2), code="deployment_starting",
                ) from exc  # fmt: skip
            replica_box.append(replica)
            stats.inflight += 1
            try:
                if ex.stream:
                    return await self._relay_stream(ex, target, replica, payload)
                reply = await target.backend.send(replica, ex.endpoint.path, payload, ex.rid, ex.timeout)
                if replica.failures:
                    replica.failures = 0
                response, usage = _rewrite_reply(reply, ex.route.name, target, ex.headers)
                return response, 200, usage, None
            except UpstreamError as exc:
                # Nothing has reached the client yet (a stream that had started answered with an error event).
                replica.failures += 1
                replica.failed += 1
                self.request_failed(replica, exc.message)
                tried.append(replica)
                if any(r.ready and r not in tried for r in dispatcher.replicas):
                    continue  # another replica of the same deployment
                if exc.code != "upstream_unreachable" or same_again:
                    raise
                # The only replica refused or died: an engine restarting says so within the pause,
                # and the retry then waits for it rather than failing.
                same_again = True
            finally:
                dispatcher.release(replica)
                stats.inflight -= 1
            await asyncio.sleep(_RETRY_PAUSE)

    async def _read_json(self, request: web.Request) -> tuple[dict, int]:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise BodyTooLarge(
                f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes "
                "(server.max_body_bytes)"
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(
                f"request body exceeds the limit of {self.max_body_bytes} bytes (server.max_body_bytes)"
            ) from None
        if not raw:
            raise InvalidRequest("the request body is empty; expected a JSON object")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequest(f"the request body must be a JSON object, got {type(body).__name__}")
        return body, len(raw)

    async def _relay_stream(
        self, ex: _Exchange, target: Target, replica: Replica, payload: bytes
    ) -> tuple[web.StreamResponse, int, Usage | None, float | None]:
        request, endpoint, route, rid, started = ex.request, ex.endpoint, ex.route, ex.rid, ex.started
        client_wants_usage = ex.client_wants_usage
        upstream = await target.backend.open_stream(replica, endpoint.path, payload, rid, ex.timeout)
        if replica.failures:
            replica.failures = 0
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                DEPLOYMENT_HEADER: target.name,
                **ex.headers,
            }
        )
        usage: Usage | None = None
        ttft: float | None = None
        done = False
        try:
            await response.prepare(request)
            decoder = SSEDecoder()
            out: list[bytes] = []
            async for chunk in upstream.chunks():
                for data in decoder.feed(chunk):
                    if data == DONE:
                        done = True
                        continue
                    try:
                        obj = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamError(
                            f"deployment {target.name!r} replica {replica.name} sent a malformed event"
                        ) from None
                    if not isinstance(obj, dict):
                        continue
                    if "error" in obj:  # the upstream's own terminal error event
                        raise _upstream_stream_error(target, replica, obj["error"])
                    obj["model"] = route.name
                    if ttft is None and obj.get("choices"):
                        ttft = time.perf_counter() - started
                    u = obj.get("usage")
                    if u:
                        usage = Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0))
                    if not client_wants_usage:
                        if u and not obj.get("choices"):
                            continue  # the usage-only chunk we asked for ourselves
                        obj.pop("usage", None)
                    out.append(b"data: " + orjson.dumps(obj) + b"\n\n")
                if out and not done:
                    await response.write(b"".join(out))
                    out = []
            if not done:
                raise UpstreamError(
                    f"deployment {target.name!r} replica {replica.name} ended the stream without [DONE]",
                    code="upstream_stream_error",
                )
            # The last events, [DONE] and the end of the chunked body leave in one write.
            out.append(DONE_EVENT)
            await response.write_eof(b"".join(out))
            return response, 200, usage, ttft
        except APIError as exc:
            if not response.prepared:
                raise
            # Headers are gone: end with an explicit error event, never a silent truncation.
            await response.write_eof(event(exc.body()))
            return response, exc.status, usage, ttft
        finally:
            upstream.close()


def _rewrite_reply(
    reply: bytes, route: str, target: Target, headers: dict[str, str]
) -> tuple[web.Response, Usage | None]:
    headers = {DEPLOYMENT_HEADER: target.name, **headers}
    try:
        doc = orjson.loads(reply)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"deployment {target.name!r} answered with a body that is not JSON") from None
    usage = None
    if isinstance(doc, dict):
        doc["model"] = route
        u = doc.get("usage")
        if isinstance(u, dict):
            usage = Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0))
    return web.Response(body=orjson.dumps(doc), content_type="application/json", headers=headers), usage


def _upstream_stream_error(target: Target, replica: Replica, err: object) -> UpstreamError:
    message = err.get("message", err) if isinstance(err, dict) else err
    return UpstreamError(
        f"deployment {target.name!r} replica {replica.name} failed mid-stream: {message}",
        code="upstream_stream_error",
    )


def _exhausted(route: RouteEntry, candidates: list[Target], errors: list[APIError]) -> APIError:
    """One error for a request no deployment could serve; it names each deployment and why."""
    if route.strict:
        err = errors[0]
        err.message = f"route {route.name!r} is strict (fallbacks: none) and {err.message}"
        return err
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    why = "; ".join(f"{t.name}: {e.message}" for t, e in zip(candidates, errors, strict=False))
    first.message = f"route {route.name!r}: no deployment could answer ({why})"
    return first
