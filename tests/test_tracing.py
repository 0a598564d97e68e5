"""Traces: the gateway exports OTLP/HTTP to a receiver in this test, which decodes the protobuf.

A request that fails over shows as one request span with two attempt spans (the first with its error);
the client's W3C traceparent is the parent, and each attempt's traceparent reaches its upstream. With
tracing off, nothing is exported and the OpenTelemetry SDK is not even imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.conftest import PY, Gateway, Upstream, chat_body, eventually, write_fleet

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
# The batch processor's default delay is 5 s; a test waits for spans, so export at once.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


class Receiver:
    """An OTLP/HTTP traces endpoint: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts = 0
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/v1/traces", self.path
                assert self.headers["Content-Type"] == "application/x-protobuf"
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        received.spans.extend(ss.spans)
                received.posts += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def attrs(span: Span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = v.string_value or v.int_value or v.double_value or v.bool_value or list(v.array_value.values)
    return out


def headers_seen(path) -> list[dict]:
    return [json.loads(line)["headers"] for line in path.read_text().splitlines()] if path.exists() else []


def failover_fleet(tmp_path, bad: Upstream, good: Upstream, observability: str):
    return write_fleet(
        tmp_path,
        "deployments:\n"
        f"  broken: {{kind: openai, urls: ['{bad.url}'], model: fake-model}}\n"
        f"  healthy: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        "routes:\n"
        "  chat: {deployments: [healthy]}\n"
        "  flaky: {deployments: [broken], fallbacks: [chat]}\n" + observability,
    )


def test_a_failover_is_one_request_span_with_two_attempts_and_the_traceparent_reaches_the_upstream(
    tmp_path, start, receiver
):
    bad = start(Upstream, "--status", "500", "--headers-log", str(tmp_path / "bad.jsonl"))
    good = start(Upstream, "--headers-log", str(tmp_path / "good.jsonl"))
    fleet = failover_fleet(tmp_path, bad, good, f"observability: {{otlp_endpoint: '{receiver.url}'}}\n")
    gw = start(Gateway, fleet, env=FAST_EXPORT)
    assert "tracing: OTLP/HTTP to" in gw.output
    r = httpx.post(gw.url + "/chat/completions", json=chat_body("flaky"), headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200, r.text + gw.output
    rid = r.headers["X-Request-ID"]

    def trace():
        spans = [s for s in receiver.spans if s.trace_id.hex() == CLIENT_TRACE]
        return spans if any(s.kind == Span.SPAN_KIND_SERVER for s in spans) else None

    spans = eventually(trace, 15, "the request's spans at the receiver")
    (request,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    assert request.parent_span_id.hex() == CLIENT_SPAN  # the client's trace continues
    a = attrs(request)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "flaky"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["http.response.status_code"] == 200 and a["modelfleet.attempts"] == 2
    attempts = sorted((s for s in spans if s.name.startswith("attempt")), key=lambda s: s.start_time_unix_nano)
    assert [s.name for s in attempts] == ["attempt broken", "attempt healthy"]
    assert all(s.parent_span_id == request.span_id and s.kind == Span.SPAN_KIND_CLIENT for s in attempts)
    first, second = attempts
    assert first.status.code == Status.STATUS_CODE_ERROR and "HTTP 500" in first.status.message
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.code != Status.STATUS_CODE_ERROR
    names = {s.name for s in spans}
    assert {"chat", "route", "attempt broken", "attempt healthy"} <= names
    assert all(attrs(s)["modelfleet.request_id"] == rid for s in spans)  # the request id in every span

    # Each upstream got its own attempt's context: a vLLM with tracing on joins the trace there.
    (to_bad,) = headers_seen(tmp_path / "bad.jsonl")
    (to_good,) = headers_seen(tmp_path / "good.jsonl")
    assert to_bad["traceparent"] == f"00-{CLIENT_TRACE}-{first.span_id.hex()}-01"
    assert to_good["traceparent"] == f"00-{CLIENT_TRACE}-{second.span_id.hex()}-01"
    assert to_good["x-request-id"] == rid


def test_a_stream_has_a_relay_span_and_sampling_follows_the_fleet_file(tmp_path, start, receiver):
    good = start(Upstream, "--chunks", "4", "--headers-log", str(tmp_path / "up.jsonl"))
    fleet = write_fleet(
        tmp_path,
        f"deployments:\n  d: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [d]}\n"
        f"observability: {{otlp_endpoint: '{receiver.url}', sample_ratio: 0.0, trust_client_sampling: true}}\n",
    )
    gw = start(Gateway, fleet, env=FAST_EXPORT)
    # Sampling 0: a new trace is not recorded, but a trusted client's sampled trace is (parent-based).
    httpx.post(gw.url + "/chat/completions", json=chat_body(stream=True))
    r = httpx.post(gw.url + "/chat/completions", json=chat_body(stream=True), headers={"traceparent": TRACEPARENT})
    assert r.status_code == 200 and "[DONE]" in r.text
    spans = eventually(lambda: [s for s in receiver.spans if s.name == "stream relay"], 15, "the relay span")
    assert len(spans) == 1 and spans[0].trace_id.hex() == CLIENT_TRACE
    eventually(lambda: any(s.kind == Span.SPAN_KIND_SERVER for s in receiver.spans), 15)
    assert {s.trace_id.hex() for s in receiver.spans} == {CLIENT_TRACE}
    # The unsampled request still hands the upstream a trace context, saying "not sampled" (flag bit 0 unset).
    unsampled, sampled = (h["traceparent"] for h in headers_seen(tmp_path / "up.jsonl"))
    assert int(unsampled.rsplit("-", 1)[1], 16) & 1 == 0 and CLIENT_TRACE not in unsampled
    assert sampled.startswith(f"00-{CLIENT_TRACE}-") and int(sampled.rsplit("-", 1)[1], 16) & 1 == 1


def test_an_untrusted_client_cannot_force_its_requests_to_be_traced(tmp_path, start, receiver):
    good = start(Upstream, "--headers-log", str(tmp_path / "up.jsonl"))
    fleet = write_fleet(
        tmp_path,
        f"deployments:\n  d: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [d]}\n"
        f"observability: {{otlp_endpoint: '{receiver.url}', sample_ratio: 0.0}}\n",
    )
    gw = start(Gateway, fleet, env=FAST_EXPORT)
    for _ in range(5):
        r = httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={"traceparent": TRACEPARENT})
        assert r.status_code == 200
    time.sleep(1.5)  # longer than FAST_EXPORT's batch delay
    assert receiver.posts == 0
    # The trace is still joined, and the upstream is told it is not sampled.
    assert all(h["traceparent"].startswith(f"00-{CLIENT_TRACE}-") and h["traceparent"].endswith("-00")
               for h in headers_seen(tmp_path / "up.jsonl"))  # fmt: skip


def test_tracing_off_exports_nothing_and_passes_the_clients_traceparent_through(tmp_path, start, receiver):
    good = start(Upstream, "--headers-log", str(tmp_path / "good.jsonl"))
    bad = start(Upstream, "--status", "500")
    fleet = failover_fleet(tmp_path, bad, good, "")
    # The receiver listens where OTEL's default would send; nothing configures tracing, so nothing comes.
    env = {k: "" for k in os.environ if k.startswith("OTEL_")}
    gw = start(Gateway, fleet, env=env)
    for _ in range(5):
        r = httpx.post(gw.url + "/chat/completions", json=chat_body("flaky"), headers={"traceparent": TRACEPARENT})
        assert r.status_code == 200
    assert all(h["traceparent"] == TRACEPARENT for h in headers_seen(tmp_path / "good.jsonl"))
    assert "tracing:" not in gw.output
    assert receiver.posts == 0


def one_route(tmp_path, upstream: Upstream):
    return write_fleet(
        tmp_path,
        f"deployments:\n  d: {{kind: openai, urls: ['{upstream.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [d]}\n",
    )


NO_SPANS = """
import asyncio, sys
from aiohttp.test_utils import TestClient, TestServer
from modelfleet.app import Gateway
from modelfleet.config import load_fleet
from modelfleet.observability import tracing

async def main():
    gw = Gateway(load_fleet(sys.argv[1]))
    async with TestClient(TestServer(gw.app)) as client:
        for _ in range(20):
            body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status == 200, await r.text()
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    print(f"tracer={tracing.TRACER} otel_modules={loaded}")

asyncio.run(main())
"""


def test_tracing_off_makes_no_tracer_and_imports_no_opentelemetry_on_the_hot_path(tmp_path, start):
    good = start(Upstream)
    fleet = one_route(tmp_path, good)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([PY, "-c", NO_SPANS, str(fleet)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tracer=None otel_modules=[]" in done.stdout


def test_the_standard_otel_variables_turn_tracing_on(tmp_path, start, receiver):
    good = start(Upstream)
    fleet = one_route(tmp_path, good)
    gw = start(Gateway, fleet, env={**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                                    "OTEL_SERVICE_NAME": "gw-under-test"})  # fmt: skip
    assert httpx.post(gw.url + "/chat/completions", json=chat_body()).status_code == 200
    eventually(lambda: any(s.kind == Span.SPAN_KIND_SERVER for s in receiver.spans), 15, "a request span")
