"""The hot path: validate, resolve the route, take a replica, forward, relay, account.

    request -> validate(schema) -> route.pick() deployment -> dispatcher.acquire() replica
            -> backend.send() / backend.open_stream() -> rewrite `model`, collect usage -> client

Bodies are parsed once with orjson and forwarded as the client wrote them, but for `model`
(the route name becomes the upstream's name, and back) and `stream_options.include_usage`
(always asked of the upstream, so every stream is accounted; the usage chunk is dropped
again if the client did not ask for it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiohttp import web
from pydantic import TypeAdapter

from modelfleet.api import schema
from modelfleet.api.sse import DONE, DONE_EVENT, SSEDecoder, event
from modelfleet.backends.base import Backend
from modelfleet.errors import APIError, BodyTooLarge, InvalidRequest, ModelNotFound, UpstreamError
from modelfleet.observability.access_log import AccessLog
from modelfleet.observability.metrics import GatewayMetrics
from modelfleet.routing.dispatch import Dispatcher
from modelfleet.routing.routes import WeightedChoice
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


class Proxy:
    def __init__(
        self,
        routes: dict[str, RouteEntry],
        targets: dict[str, Target],
        metrics: GatewayMetrics,
        *,
        max_body_bytes: int,
        access_log: AccessLog | None = None,
    ) -> None:
        self.routes = routes
        self.targets = targets
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log

    async def handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request[REQUEST_ID]
        route_name = deployment = replica_name = ""
        status = 500
        usage: Usage | None = None
        ttft: float | None = None
        try:
            body = await self._read_json(request)
            schema.validate(endpoint.schema, body)
            route = self.routes.get(body["model"])
            if route is None:
                raise ModelNotFound(
                    f"The model {body['model']!r} does not exist; available: {', '.join(self.routes)}",
                    param="model",
                )
            route_name = route.name
            target = self.targets[route.choice.pick()]
            deployment = target.name
            if endpoint is EMBEDDINGS and not target.supports_embeddings:
                raise InvalidRequest(
                    f"route {route.name!r} is served by deployment {target.name!r} ({target.kind}), "
                    "which does not serve embeddings",
                    param="model",
                )
            stream = endpoint.streams and body.get("stream") is True
            client_wants_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
            body["model"] = target.upstream_model
            if stream:
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            payload = orjson.dumps(body)

            stats = self.metrics.stats_for(route_name, deployment)
            for attempt in range(2):
                replica = await target.dispatcher.acquire(route.timeout)
                replica_name = replica.name
                stats.inflight += 1
                try:
                    if stream:
                        streamed, status, usage, ttft = await self._relay_stream(
                            request, endpoint, route, target, replica, payload, rid, started, client_wants_usage
                        )
                        return streamed
                    reply = await target.backend.send(replica, endpoint.path, payload, rid, route.timeout)
                    break
                except UpstreamError as exc:
                    # Failed before the first byte (refused, or the server died): the client has seen
                    # nothing and generation has no side effects, so one retry is safe. The pause lets
                    # the control plane notice a dead engine first, so the retry waits for its restart.
                    if exc.code != "upstream_unreachable" or attempt:
                        raise
                finally:
                    target.dispatcher.release(replica)
                    stats.inflight -= 1
                await asyncio.sleep(_RETRY_PAUSE)
            response, usage = _rewrite_reply(reply, route.name, target, rid)
            status = 200
            return response
        except APIError as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(route_name, deployment, status, elapsed, ttft, usage)
            if self.access_log is not None:
                self.access_log.record(
                    rid,
                    request.method,
                    request.path,
                    status,
                    elapsed * 1000,
                    route_name,
                    deployment,
                    replica_name,
                )

    async def _read_json(self, request: web.Request) -> dict:
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
        return body

    async def _relay_stream(
        self,
        request: web.Request,
        endpoint: Endpoint,
        route: RouteEntry,
        target: Target,
        replica: Replica,
        payload: bytes,
        rid: str,
        started: float,
        client_wants_usage: bool,
    ) -> tuple[web.StreamResponse, int, Usage | None, float | None]:
        upstream = await target.backend.open_stream(replica, endpoint.path, payload, rid, route.timeout)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Request-ID": rid,
                DEPLOYMENT_HEADER: target.name,
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


def _rewrite_reply(reply: bytes, route: str, target: Target, rid: str) -> tuple[web.Response, Usage | None]:
    headers = {DEPLOYMENT_HEADER: target.name, "X-Request-ID": rid}
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
