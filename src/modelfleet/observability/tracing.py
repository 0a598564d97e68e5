"""OpenTelemetry traces of the request path, off unless configured, and then free on the hot path.

    request (SERVER)                 gen_ai.* attributes, the client's W3C traceparent as parent
      gate                           authentication and limits
      route                          the variant picked and the deployments to try, in order
      attempt <deployment>           one per upstream try (CLIENT): retries and failovers each show,
        stream relay                 a failed one with its error; its traceparent goes upstream
      wake wait                      a request that woke a stopped deployment, until a replica is ready

Turned on by `observability.otlp_endpoint` in the fleet file or the standard OTEL_EXPORTER_OTLP_ENDPOINT /
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none keep it off; the
other OTEL_* variables, headers, sampler, service name, are the SDK's). Off, the SDK is never imported and
`TRACER` stays None: the hot path pays one module-level None check. Every span carries the request id.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger("modelfleet")

TRACER: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None
_propagator: Any = None
# Headers the upstream call adds: the attempt span's traceparent, or with tracing off the client's own.
UPSTREAM: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("upstream_trace", default=None)
RID = "modelfleet.request_id"
_OPERATIONS = {"/chat/completions": "chat", "/completions": "text_completion", "/embeddings": "embeddings"}
T = TypeVar("T")
# W3C trace context (https://www.w3.org/TR/trace-context/): version, trace id, parent id, flags; ff and all-zero
# ids are invalid. A later version may append "-..." fields, which are dropped (we speak version 00).
_TRACEPARENT = re.compile(r"(?!ff)([0-9a-f]{2})-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})")
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_MAX_TRACESTATE = 512  # W3C: a vendor may drop a tracestate longer than this
_MAX_ATTRIBUTE = 256  # a client's string in a span (the model it asked for) is cut here


def endpoint(configured: str | None) -> str | None:
    """Where traces go, or None for off: the fleet file's endpoint, else the standard OTEL_* variables."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER", "") == "none":
        return None
    if configured:
        return configured.rstrip("/") + "/v1/traces"
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return None


def setup(
    configured: str | None, sample_ratio: float, service_name: str, version: str, trust_client: bool = False
) -> str | None:
    """Start exporting if configured; returns the traces URL to show (a password in it masked), or None
    when tracing stays off."""
    global TRACER, _provider, _propagator
    url = endpoint(configured)
    if url is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        from modelfleet.errors import ConfigError

        raise ConfigError(
            [
                "observability.otlp_endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT) is set, but OpenTelemetry is not "
                "installed: pip install 'modelfleet[otel]'"
            ]
        ) from None
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name, "service.version": version}
    )
    # OTEL_TRACES_SAMPLER wins over the fleet file, as everywhere else in OpenTelemetry.
    # A client's trace is joined either way; whether it is recorded is the fleet's ratio unless clients are
    # trusted (the ratio decides by trace id, so all gateways agree on one trace).
    ratio = TraceIdRatioBased(sample_ratio)
    sampler = (
        None
        if os.environ.get("OTEL_TRACES_SAMPLER")
        else ParentBased(ratio)
        if trust_client
        else ParentBased(ratio, remote_parent_sampled=ratio)
    )
    _provider = TracerProvider(resource=resource, sampler=sampler)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _propagator = TraceContextTextMapPropagator()
    TRACER = _provider.get_tracer("modelfleet")
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def shutdown() -> None:
    """Flush what is buffered and stop (blocking: call it off the event loop)."""
    global TRACER, _provider
    if _provider is not None:
        _provider.shutdown()
    TRACER = _provider = None


def current_trace_id() -> str:
    """The current trace's id as 32 hex digits, or "" (tracing off, or not sampled)."""
    if TRACER is None:
        return ""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid and ctx.trace_flags.sampled else ""


def client_context(headers: Any) -> dict[str, str] | None:
    """The client's W3C trace context, or None when it sent none or a malformed one (which W3C says to
    ignore): a client's garbage never reaches an upstream, and never makes a log line (OpenTelemetry's
    parser warns with the whole header). A malformed or oversized tracestate alone is dropped."""
    tp = headers.get("traceparent")
    if tp is None:
        return None
    tp = tp.strip(" \t")
    m = _TRACEPARENT.match(tp)
    if m is None or (len(tp) > 55 and (m.group(1) == "00" or tp[55] != "-" or len(tp) > 512)):
        return None
    carrier = {"traceparent": "00" + tp[2:55]}
    ts = headers.get("tracestate")
    if ts is not None and len(ts) <= _MAX_TRACESTATE:
        members = [x.strip(" \t") for x in ts.split(",")]
        if len(members) <= 32 and all(not x or _TRACESTATE_MEMBER.fullmatch(x) for x in members):
            carrier["tracestate"] = ts
    return carrier


def pass_through(headers: Any) -> None:
    """Tracing off: a client's own trace context still reaches the upstream (a vLLM joins its trace)."""
    if headers.get("traceparent") is not None and (carrier := client_context(headers)) is not None:
        UPSTREAM.set(carrier)


class RequestTrace:
    """The spans of one request; made only while tracing is on."""

    __slots__ = ("_token", "recording", "rid", "span")

    def __init__(self, headers: Any, path: str, rid: str) -> None:
        from opentelemetry import context, trace

        parent = _propagator.extract(client_context(headers) or {})
        op = _OPERATIONS.get(path, path.strip("/"))
        self.rid = rid
        self.span = TRACER.start_span(
            op, context=parent, kind=trace.SpanKind.SERVER,
            attributes={RID: rid, "gen_ai.operation.name": op, "http.request.method": "POST", "url.path": path},
        )  # fmt: skip
        self._token = context.attach(trace.set_span_in_context(self.span, parent))
        # Not sampled: no child spans either, only the trace context the upstream is handed.
        self.recording = self.span.is_recording()

    async def within(self, name: str, work: Coroutine[Any, Any, T], **attributes: Any) -> T:
        """Await `work` inside a child span named `name`."""
        if not self.recording:
            return await work
        with TRACER.start_as_current_span(name, attributes={RID: self.rid, **attributes}):
            return await work

    def body(self, body: dict) -> None:
        if not self.recording:
            return
        model = body.get("model")
        a = {"gen_ai.request.model": model[:_MAX_ATTRIBUTE] if isinstance(model, str) else None}
        for field in ("max_tokens", "temperature", "top_p"):
            if isinstance(body.get(field), int | float):
                a[f"gen_ai.request.{field}"] = body[field]
        self.span.set_attributes({k: v for k, v in a.items() if isinstance(v, str | int | float)})

    def route(self, route: str, variant: str, team: str, candidates: list[str]) -> None:
        if not self.recording:
            return
        with TRACER.start_as_current_span("route", attributes={
            RID: self.rid, "modelfleet.route": route, "modelfleet.variant": variant,
            "modelfleet.team": team, "modelfleet.candidates": candidates,
        }):  # fmt: skip
            pass

    def attempts(self, attempt: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        """Wrap the proxy's attempt(exchange, target, replica, seconds left): one CLIENT span per call,
        whose context is what the upstream gets."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        n = 0
        if not self.recording:
            carrier: dict[str, str] = {}
            _propagator.inject(carrier)
            UPSTREAM.set(carrier)  # the upstream learns the trace is not sampled
            return attempt

        async def traced(ex: Any, target: Any, replica: Any, left: float) -> T:
            nonlocal n
            n += 1
            attrs = {
                RID: self.rid, "modelfleet.attempt": n, "modelfleet.deployment": target.name,
                "modelfleet.replica": replica.name, "gen_ai.request.model": target.upstream_model,
                **_server(replica.url),
            }  # fmt: skip
            with TRACER.start_as_current_span(
                f"attempt {target.name}", kind=trace.SpanKind.CLIENT, attributes=attrs,
                record_exception=False, set_status_on_exception=False,
            ) as span:  # fmt: skip
                headers: dict[str, str] = {}
                _propagator.inject(headers)
                UPSTREAM.set(headers)
                try:
                    return await attempt(ex, target, replica, left)
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
                    span.set_status(Status(StatusCode.ERROR, getattr(exc, "message", str(exc))))
                    raise

        return traced

    def end(self, status: int, usage: Any, deployment: str, attempts: int) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if not self.recording:
            span.end()
            context.detach(self._token)
            return
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("modelfleet.attempts", attempts)
        if deployment:
            span.set_attribute("modelfleet.deployment", deployment)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        span.end()
        context.detach(self._token)


def _server(url: str) -> dict[str, Any]:
    """OpenTelemetry's server.address and server.port: the host, never the whole URL (a password in it stays out)."""
    parts = urlsplit(url)
    server: dict[str, Any] = {"server.address": parts.hostname or ""}
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # not a number: the attempt fails on its own, the span need not
        port = None
    if port is not None:
        server["server.port"] = port
    return server


def start(name: str, **attributes: Any) -> Any:
    """A child span of the current one, ended by the caller (`.end()`); only call while TRACER is set."""
    from modelfleet.observability.logging import request_id

    return TRACER.start_span(name, attributes={RID: request_id.get(), **attributes})
