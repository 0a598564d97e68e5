"""The hot path: authenticate, validate, resolve the route, forward, relay, account.

    request -> gate.authenticate (401) -> validate(schema) -> route (404, 403 for another team's)
            -> gate.admit (429) -> router.run(candidates, deadline, attempt)   (routing/plan.py)
               attempt: backend.send() / open_stream() on the replica it is given -> rewrite, relay
            -> gate.finish (settle limits, usage ledger)

This module translates HTTP; which deployments and replicas a request tries, in which order and
for how long, is routing's (routing/plan.py). An attempt raises UpstreamError only while nothing
has reached the client, which is what makes it safe to try elsewhere.

Bodies are parsed once with orjson and forwarded as the client wrote them, but for `model`
(the route name becomes the upstream's name, and back) and `stream_options.include_usage`
(always asked of the upstream, so every stream is accounted; the usage chunk is dropped
again if the client did not ask for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import TypeAdapter

from modelfleet.access.directory import Caller
from modelfleet.access.gate import DEFAULT_RESERVATION, OPEN_TEAM, Gate
from modelfleet.api import schema
from modelfleet.api.drain import ANSWERING
from modelfleet.api.sse import DONE_EVENT, EventTooLarge, SSEDecoder, event
from modelfleet.api.stream_events import StreamEvents
from modelfleet.errors import (
    APIError,
    BodyTooLarge,
    InvalidRequest,
    ModelNotFound,
    RequestTimeout,
    Unavailable,
    UpstreamError,
    unreadable_body,
)
from modelfleet.observability import tracing
from modelfleet.observability.access_log import AccessLog
from modelfleet.observability.metrics import GatewayMetrics
from modelfleet.routing.plan import Route, Router, Target
from modelfleet.routing.routes import sticky_point
from modelfleet.state.counters import Verdict
from modelfleet.values import Replica, Usage

log = logging.getLogger("modelfleet.api")
REQUEST_ID = web.RequestKey("request_id", str)
DEPLOYMENT_HEADER = "X-Modelfleet-Deployment"
_Answer = tuple[web.StreamResponse, int, Usage | None, float | None]
CLIENT_CLOSED = 499  # nginx's code for "client went away"; bounded like every status label


@dataclass(frozen=True, slots=True)
class Operation:
    """One OpenAI API operation: its path upstream, the schema its body must meet, whether it streams."""

    path: str
    schema: TypeAdapter
    streams: bool


CHAT = Operation("/chat/completions", schema.CHAT, streams=True)
COMPLETIONS = Operation("/completions", schema.COMPLETION, streams=True)
EMBEDDINGS = Operation("/embeddings", schema.EMBEDDING, streams=False)


@dataclass(slots=True)
class _Exchange:
    """What one request carries through its attempts, and what the last one found."""

    request: web.Request
    operation: Operation
    route: Route
    body: dict
    rid: str
    started: float
    stream: bool
    client_wants_usage: bool
    headers: dict[str, str]
    size: int = 0  # of the request body, in bytes
    team: str = OPEN_TEAM
    variant: str = ""
    deployment: str = ""
    replica: Replica | None = None
    attempts: int = 0
    output: list[bytes | str] | None = None  # the answer's text, kept only for routes that log content
    usage: Usage | None = None  # as the deployment reported it, once it has
    generated: int = 0  # stream events that carried generated text, relayed so far

    def turn_to(self, target: Target) -> None:
        self.deployment = target.name

    def billed(self) -> Usage:
        """What a request the client abandoned is billed, so that leaving is never cheaper than staying.

        A stream: the prompt (estimated at four bytes a token) and one token per event relayed, since
        generation stopped there. A JSON answer: the prompt and all of max_tokens (or the reservation
        for a request without it) for each of its n (or best_of) choices, since what the deployment
        generated before it stopped is unknown.
        """
        if self.usage is not None:
            return self.usage
        prompt = max(1, self.size // 4)
        if self.stream:
            return Usage(prompt, self.generated)
        if self.operation is EMBEDDINGS:
            return Usage(prompt, 0)  # embeddings generate nothing
        asked = self.body.get("max_completion_tokens") or self.body.get("max_tokens")
        choices = max(self.body.get("n") or 1, self.body.get("best_of") or 1)  # each generates its own, as admitted
        return Usage(prompt, (asked if isinstance(asked, int) else DEFAULT_RESERVATION) * choices)


class Proxy:
    def __init__(
        self,
        router: Router,
        metrics: GatewayMetrics,
        gate: Gate,
        *,
        max_body_bytes: int,
        body_timeout: float = 30.0,
        write_timeout: float = 30.0,
        access_log: AccessLog | None = None,
    ) -> None:
        self.router = router
        self.routes = router.routes
        self.targets = router.targets
        self.metrics = metrics
        self.gate = gate
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.write_timeout = write_timeout
        self._streams: set[Any] = set()  # the upstream streams being relayed now, for end_streams
        self._closing = False
        self.access_log = access_log

    def end_streams(self) -> None:
        """The drain deadline: every stream still open ends with an error event that says why. Its upstream
        is closed, so the relay's own error path writes the event (no task is cancelled: aiohttp's own
        shutdown cancels handlers too, and a swallowed cancellation would keep a connection alive)."""
        self._closing = True
        for upstream in list(self._streams):
            upstream.close()

    async def handle(self, request: web.Request, operation: Operation) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request[REQUEST_ID]
        route_name = variant = ""
        ex: _Exchange | None = None
        status = 500
        usage: Usage | None = None
        ttft: float | None = None
        caller: Caller | None = None
        verdict: Verdict | None = None
        body: dict | None = None
        tr = tracing.RequestTrace(request.headers, operation.path, rid) if tracing.TRACER is not None else None
        if tr is None:
            tracing.pass_through(request.headers)
        try:
            if self.gate.directory.enforcing:  # open mode skips even the call
                auth = self.gate.authenticate(request.headers.get("Authorization"))
                caller = await (auth if tr is None else tr.within("gate", auth))
            body, size = await self._read_json(request)
            schema.validate(operation.schema, body)
            if tr is not None:
                tr.body(body)
            route = self.routes.get(body["model"])
            if route is None or (caller is not None and not caller.may_use(route.name)):
                if route is not None and caller is not None:
                    self.gate.allow(caller, route.name)  # raises 403: the route exists, but is not theirs
                available = ", ".join(self.gate.routes_for(caller, list(self.routes)))
                raise ModelNotFound(f"The model {body['model'][:100]!r} does not exist; available: {available}",
                                    param="model")  # fmt: skip
            route_name = route.name
            variant = route.choice.pick(self._sticky(route, request, body))
            timeout = route.timeout
            headers: dict[str, str] = {"X-Request-ID": rid}
            if caller is not None:
                if caller.timeout is not None:
                    timeout = min(timeout, caller.timeout)
                if caller.limited:
                    admit = self.gate.admit(caller, body, size, operation.streams)
                    verdict = await (
                        admit if tr is None else tr.within("gate", admit, **{"modelfleet.team": caller.team})
                    )
                    headers.update(self.gate.headers(caller, verdict))
            stream = operation.streams and body.get("stream") is True
            client_wants_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
            if stream:
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            ex = _Exchange(request, operation, route, body, rid, started, stream, client_wants_usage, headers, size,
                           caller.team if caller is not None else OPEN_TEAM, variant)  # fmt: skip
            if self.access_log is not None and route.name in self.access_log.content_routes:
                ex.output = []
            candidates = self.router.candidates(route, variant, caller.may_use if caller is not None else None)
            attempt: Callable[..., Awaitable[_Answer]] = self._relay_stream if stream else self._send
            if operation is EMBEDDINGS:
                _serves_embeddings(route, candidates[0])  # a 400 now, not after queueing for a replica
            if tr is not None:
                tr.route(route.name, variant, caller.team if caller else OPEN_TEAM, [t.name for t in candidates])
                attempt = tr.attempts(attempt)  # one span per attempt
            response, status, usage, ttft = await self.router.run(
                route,
                candidates,
                timeout,
                lambda target, replica, left: attempt(ex, target, replica, left),
                ex.turn_to,
            )
            return response
        except APIError as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            status = 503 if self._closing else CLIENT_CLOSED  # 503: cut at the drain deadline (api/drain.py)
            if ex is not None and ex.replica is not None:  # it reached a replica: bill what it cost there
                usage = ex.billed()
            raise
        finally:
            elapsed = time.perf_counter() - started
            deployment = ex.deployment if ex is not None else ""
            team = caller.team if caller is not None else OPEN_TEAM
            if route_name:  # first: it settles the team's limits, which nothing may skip
                prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                self.gate.finish(caller, verdict, route_name, deployment, variant, status, prompt, completion)
            self.metrics.observe((route_name, deployment, team, variant), status, elapsed, ttft, usage)
            if self.access_log is not None:
                self.access_log.record(
                    rid, request.method, request.path, status, elapsed * 1000, route_name, deployment,
                    ex.replica.name if ex is not None and ex.replica is not None else "",
                    team=team, variant=variant, ttft=ttft, usage=usage, attempts=ex.attempts if ex else 0,
                    trace_id=tracing.current_trace_id() if tr is not None else "",
                    content=(body, ex.output) if ex is not None and ex.output is not None else None,
                )  # fmt: skip
            if tr is not None:
                tr.end(status, usage, deployment, ex.attempts if ex is not None else 0)

    def _sticky(self, route: Route, request: web.Request, body: dict) -> float | None:
        if route.sticky is None:
            return None
        key = body.get("user") if route.sticky == "user" else request.headers.get(route.sticky)
        return sticky_point(route.name, key) if isinstance(key, str) and key else None

    def _begin(self, ex: _Exchange, target: Target, replica: Replica) -> bytes:
        """What every attempt does first: note where it goes, and name the upstream's model."""
        if ex.operation is EMBEDDINGS:
            _serves_embeddings(ex.route, target)
        ex.replica = replica
        ex.attempts += 1
        ex.body["model"] = target.upstream_model
        try:
            return orjson.dumps(ex.body)
        except TypeError:  # nesting the parser took but the encoder cannot (255 levels)
            raise InvalidRequest("the request body nests too deeply (more than 255 levels)") from None

    async def _send(
        self, ex: _Exchange, target: Target, replica: Replica, timeout: float
    ) -> tuple[web.StreamResponse, int, Usage | None, float | None]:
        payload = self._begin(ex, target, replica)
        stats = self.metrics.stats_for(ex.route.name, target.name, ex.team, ex.variant)
        stats.inflight += 1
        try:
            reply = await target.backend.send(replica, ex.operation.path, payload, ex.rid, timeout)
        finally:
            stats.inflight -= 1
        self.router.answered(replica)
        if ex.output is not None:
            ex.output.append(reply.decode("utf-8", "replace"))
        response, usage = _rewrite_reply(reply, ex.route.name, target, ex.headers)
        return response, 200, usage, None

    async def _read_json(self, request: web.Request) -> tuple[dict, int]:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise BodyTooLarge(
                f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes "
                "(server.max_body_bytes)"
            )
        try:
            # A body that came with its headers (nearly all) needs no timer: wait_for costs a task.
            read = request.read()
            raw = await (read if request.content.is_eof() else asyncio.wait_for(read, self.body_timeout))
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.body_timeout:g}s (server.body_timeout)"
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(
                f"request body exceeds the limit of {self.max_body_bytes} bytes (server.max_body_bytes)"
            ) from None
        except (HttpProcessingError, RequestPayloadError) as exc:  # not in its Content-Encoding
            raise unreadable_body(exc) from None
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
        self, ex: _Exchange, target: Target, replica: Replica, timeout: float
    ) -> tuple[web.StreamResponse, int, Usage | None, float | None]:
        payload = self._begin(ex, target, replica)
        stats = self.metrics.stats_for(ex.route.name, target.name, ex.team, ex.variant)
        stats.inflight += 1
        try:
            return await self._relay(ex, target, replica, payload, timeout)
        finally:
            stats.inflight -= 1

    async def _relay(
        self, ex: _Exchange, target: Target, replica: Replica, payload: bytes, timeout: float
    ) -> tuple[web.StreamResponse, int, Usage | None, float | None]:
        request, rid = ex.request, ex.rid
        upstream = await target.backend.open_stream(replica, ex.operation.path, payload, rid, timeout)
        relay = tracing.start("stream relay") if tracing.TRACER is not None else None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                DEPLOYMENT_HEADER: target.name,
                **ex.headers,
            }
        )
        events = StreamEvents(ex, target.name, replica.name)
        stall = _StallWatch(request, response, self.write_timeout)
        try:
            self._streams.add(upstream)
            request[ANSWERING] = True  # the drain deadline ends it with an event, never a second answer
            await response.prepare(request)
            decoder = SSEDecoder()
            async for chunk in upstream.chunks():
                try:
                    run = decoder.complete(chunk)
                except EventTooLarge as exc:  # no upstream may grow the gateway's memory without bound
                    raise UpstreamError(f"{events.where} sent {exc}") from None
                if run:
                    events.take(run)
                    if events.done:
                        # Answered at once, whatever the upstream does next: its connection is reused if its
                        # reply ended in this read too (the usual case), else dropped.
                        break
                    if ready := events.flush():
                        await response.write(ready)
            if not events.whole():
                raise UpstreamError(f"{events.where} ended the stream without [DONE]", code="upstream_stream_error")
            # The last events, [DONE] and the end of the chunked body leave in one write.
            await response.write_eof(events.flush() + DONE_EVENT)
            self.router.answered(replica)  # only a whole stream clears a replica's failures in a row
            # A deployment that ignores stream_options.include_usage is billed what was relayed, never nothing.
            return response, 200, ex.billed(), events.ttft
        except APIError as exc:
            if not response.prepared:
                raise
            if self._closing:  # the upstream was closed by end_streams: say why, and it is no replica's fault
                going = Unavailable("the gateway is shutting down and its drain_timeout ran out; retry the request",
                                    retry_after=1, code="shutting_down")  # fmt: skip
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await response.write_eof(events.flush() + event(going.body()))
                return response, going.status, ex.billed(), events.ttft
            if isinstance(exc, UpstreamError):  # a replica that breaks streams off is a failing replica
                self.router.failed(replica, exc.message)
            # Headers are gone: what came before the error (and is billed) is delivered, then an explicit
            # error event ends the stream, never a silent truncation.
            await response.write_eof(events.flush() + event(exc.body()))
            # What was relayed was generated (and delivered): billed, as a dropped stream's is.
            return response, exc.status, ex.billed(), events.ttft
        except asyncio.CancelledError:
            if stall.stalled:
                log.warning("cut off a stream whose client took no bytes for %gs (server.write_timeout)",
                            self.write_timeout)  # fmt: skip
            raise
        finally:
            self._streams.discard(upstream)
            stall.cancel()
            upstream.close()
            if relay is not None:
                relay.end()


def _serves_embeddings(route: Route, target: Target) -> None:
    if not target.supports_embeddings:
        raise InvalidRequest(
            f"route {route.name!r} is served by deployment {target.name!r} ({target.kind}), "
            "which does not serve embeddings",
            param="model",
        )


class _StallWatch:
    """One timer per stream: a client that takes none of the bytes waiting for it over `timeout` (checked
    every `timeout`, so it is cut off within twice that) loses the stream, and its replica slot goes
    back to everyone else. Costs one timer per stream, re-armed once per `timeout`."""

    __slots__ = ("_handle", "_loop", "_response", "_taken", "_task", "_timeout", "_transport", "stalled")

    def __init__(self, request: web.Request, response: web.StreamResponse, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = request.transport
        self._response = response
        self._task = asyncio.current_task()
        self._timeout = timeout
        self._taken = -1
        self.stalled = False
        self._handle = self._loop.call_later(timeout, self._check)

    def _check(self) -> None:
        t, writer = self._transport, self._response._payload_writer
        if t is None or t.is_closing() or writer is None:
            self._handle = self._loop.call_later(self._timeout, self._check)
            return
        unsent = t.get_write_buffer_size()
        taken = writer.output_size - unsent  # bytes the client has taken so far (a slow reader still takes)
        if unsent and taken == self._taken:  # bytes waiting, and not one taken since the last check
            self.stalled = True
            if self._task is not None:
                self._task.cancel()
            t.abort()
            return
        self._taken = taken
        self._handle = self._loop.call_later(self._timeout, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


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
            usage = Usage.reported(u)
    try:
        body = orjson.dumps(doc)
    except TypeError:  # nesting orjson parsed but will not encode (over 255 levels)
        raise UpstreamError(f"deployment {target.name!r} answered with JSON nested too deeply to relay") from None
    return web.Response(body=body, content_type="application/json", headers=headers), usage
