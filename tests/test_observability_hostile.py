"""Observability under attack: what a hostile client (or a careless upstream) sends must not grow /metrics,
break its exposition, reach an upstream or a log line as it came, or swell a span.

A real gateway on 127.0.0.1, the fake upstream (or a tiny one in this file for odd `usage` objects), the
real `promtool`, and the OTLP receiver of test_tracing.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import (
    METRICS_KEY,
    Gateway,
    Upstream,
    _binary,
    _missing,
    chat_body,
    eventually,
    free_port,
    scrape,
    write_fleet,
)
from tests.test_tracing import FAST_EXPORT, TRACEPARENT, Receiver, attrs, headers_seen

ALPHA = "alpha-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"
# What OpenTelemetry's own parser would have logged, with the client's header in it.
OTEL_WARNINGS = ("Member doesn't match", "exceeded the maximum length")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def _series(base: str) -> tuple[str, set[str]]:
    text = scrape(base)
    return text, {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def _odd_names(i: int) -> list[str]:
    return [uuid.uuid4().hex, f"模型-{i}-ü", f'a"b\\c\n{{x="y"}} {i}', "x" * 5000 + str(i), f"\u202e\x00{i}"]


def _odd_trace_headers(i: int) -> dict[str, str]:
    return {
        "traceparent": ["garbage", "00-" + "a" * 4000, "ff-" + "0" * 32 + "-" + "0" * 16 + "-00", TRACEPARENT][i % 4],
        "tracestate": "k=" + "v" * 4000,
        "baggage": f"user={uuid.uuid4().hex}," + "y=" * 1000,
        "X-Request-ID": uuid.uuid4().hex,
        "X-Session-ID": uuid.uuid4().hex,
    }


def test_a_hostile_client_adds_no_series_and_the_exposition_stays_valid(tmp_path, start):
    promtool = _binary("promtool")
    if promtool is None:
        _missing("promtool is not installed (.ci/run installs it: apt-get install prometheus)")
    good = start(Upstream, "--chunks", "2")
    bad = start(Upstream, "--status", "500")
    fleet = write_fleet(
        tmp_path,
        "server: {access_log: false, cors: {allow_origins: ['https://app.example']}}\n"
        f"auth: {{metrics_key: {METRICS_KEY}}}\n"
        f"teams:\n  alpha: {{keys: ['{ALPHA}']}}\n  beta: {{keys: ['{BETA}'], limits: {{rpm: 2}}}}\n"
        f"deployments:\n  a: {{kind: openai, urls: ['{good.url}'], model: fake-model}}\n"
        f"  broken: {{kind: openai, urls: ['{bad.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [a]}\n  flaky: {deployments: [broken], fallbacks: [chat]}\n",
    )
    gw = start(Gateway, fleet)
    a, b = {"Authorization": f"Bearer {ALPHA}"}, {"Authorization": f"Bearer {BETA}"}
    with httpx.Client(timeout=30) as c:
        # Every legitimate kind of answer once: what the series may hold.
        for auth in (a, b):
            for model in ("chat", "flaky", "no-such-route"):
                for stream in (False, True):
                    c.post(gw.url + "/chat/completions", json=chat_body(model, stream=stream), headers=auth)
            c.post(gw.url + "/embeddings", json={"model": "no-such-route", "input": "x"}, headers=auth)
            c.post(gw.url + "/chat/completions", json={"model": "chat"}, headers=auth)
        c.post(gw.url + "/chat/completions", json=chat_body(), headers={"Authorization": "Bearer wrong-key-0123456789"})
        c.get(gw.base + "/nope")
        c.request("PROPFIND", gw.url + "/nope")
        c.options(gw.url + "/chat/completions", headers={"Origin": "https://evil.example"})
        _series(gw.base)  # a scrape counts itself from the next one on
        _, before = _series(gw.base)

        for i in range(60):
            for name in _odd_names(i):
                c.post(gw.url + "/chat/completions", json=chat_body(name), headers=a)
                c.post(gw.url + "/embeddings", json={"model": name, "input": "x"}, headers=b)
                c.post(gw.url + "/chat/completions", json=chat_body(name),
                       headers={"Authorization": f"Bearer {uuid.uuid4().hex}"})  # fmt: skip
            c.post(gw.url + "/chat/completions", json={**chat_body(stream=i % 2 == 0), "user": uuid.uuid4().hex},
                   headers={**a, **_odd_trace_headers(i)})  # fmt: skip
            c.post(gw.url + "/chat/completions", content=b"\xff\xfe{", headers=a)
            c.post(gw.url + "/chat/completions", json={"model": ["chat"], "messages": "x"}, headers=a)
            c.get(f"{gw.base}/{uuid.uuid4().hex}/ü%0A%00")
            c.request("BREW", f"{gw.url}/{uuid.uuid4().hex}")
            c.options(gw.url + f"/{uuid.uuid4().hex}", headers={"Origin": "https://evil.example"})
        text, after = _series(gw.base)

    assert after == before, sorted(after ^ before)[:10]
    assert "xxxxx" not in text and "模型" not in text and "garbage" not in text
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_a_malformed_trace_context_never_reaches_an_upstream(tmp_path, start):
    up = start(Upstream, "--headers-log", str(tmp_path / "up.jsonl"))
    fleet = write_fleet(
        tmp_path,
        f"deployments:\n  d: {{kind: openai, urls: ['{up.url}'], model: fake-model}}\n"
        "routes:\n  chat: {deployments: [d]}\n",
    )
    gw = start(Gateway, fleet, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""})
    sent = [
        {"traceparent": "garbage", "tracestate": "k=v"},
        {"traceparent": "00-" + "a" * 4000},
        {"traceparent": TRACEPARENT.upper()},
        {"traceparent": TRACEPARENT + "-extra"},  # version 00 has exactly four fields
        {"traceparent": TRACEPARENT, "tracestate": "k=" + "v" * 600},  # over W3C's 512: the tracestate goes
        {"traceparent": TRACEPARENT, "tracestate": "Bad Key=v"},
        {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE,rojo@vendor=00f067aa0ba902b7"},
        {"traceparent": "01" + TRACEPARENT[2:] + "-future-field"},  # a later version: read as 00
    ]
    for headers in sent:
        assert httpx.post(gw.url + "/chat/completions", json=chat_body(), headers=headers).status_code == 200
    seen = [(h.get("traceparent"), h.get("tracestate")) for h in headers_seen(tmp_path / "up.jsonl")]
    assert seen == [
        (None, None),
        (None, None),
        (None, None),
        (None, None),
        (TRACEPARENT, None),
        (TRACEPARENT, None),
        (TRACEPARENT, "congo=t61rcWkgMzE,rojo@vendor=00f067aa0ba902b7"),
        (TRACEPARENT, None),
    ]


def test_with_tracing_on_odd_headers_start_a_new_trace_and_spans_stay_small_and_secret_free(tmp_path, start, receiver):
    password = "hunter2-0123456789"
    up = start(Upstream, "--headers-log", str(tmp_path / "up.jsonl"))
    # A password in the collector's URL (one in a replica's URL is refused by `config check`: api_key).
    replica_url = up.url
    collector = receiver.url.replace("http://", f"http://tracer:{password}@")
    fleet = write_fleet(
        tmp_path,
        f"teams:\n  alpha: {{keys: ['{ALPHA}']}}\n"
        f"deployments:\n  d: {{kind: openai, urls: ['{replica_url}'], model: fake-model}}\n"
        f"routes:\n  chat: {{deployments: [d]}}\nobservability: {{otlp_endpoint: '{collector}'}}\n",
    )
    gw = start(Gateway, fleet, env=FAST_EXPORT)
    assert "tracing: OTLP/HTTP to http://tracer:***@127.0.0.1" in gw.output
    auth = {"Authorization": f"Bearer {ALPHA}"}
    odd = {"traceparent": "00-" + "a" * 4000, "tracestate": "k=" + "v" * 4000, "baggage": "b=" * 3000}
    r = httpx.post(gw.url + "/chat/completions", json=chat_body(stream=True), headers={**auth, **odd})
    assert r.status_code == 200
    r = httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={**auth, "traceparent": "garbage"})
    assert r.status_code == 200
    assert httpx.post(gw.url + "/chat/completions", json=chat_body("m" * 200_000), headers=auth).status_code == 404
    wrong = "sk-wrong-key-0123456789abcdef"
    r = httpx.post(gw.url + "/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {wrong}"})
    assert r.status_code == 401
    servers = eventually(lambda: (s := [x for x in receiver.spans if x.kind == Span.SPAN_KIND_SERVER]) and
                         len(s) == 4 and s, 15, "four request spans")  # fmt: skip
    # Neither client's garbage became the parent: each is a trace of its own, with no parent.
    assert len({s.trace_id for s in servers}) == 4 and all(not s.parent_span_id for s in servers)
    assert max(len(s.SerializeToString()) for s in receiver.spans) < 4096
    assert {len(attrs(s).get("gen_ai.request.model", "")) for s in servers} == {0, 4, 256}
    for s in receiver.spans:  # no password, and neither the team's key nor a wrong one
        wire = s.SerializeToString().decode("utf-8", "replace")
        assert password not in wire and ALPHA not in wire and wrong not in wire
    (attempt, *_) = [s for s in receiver.spans if s.name == "attempt d"]
    assert attrs(attempt)["server.address"] == "127.0.0.1" and attrs(attempt)["server.port"] == up.port
    # The upstream got the attempt's own context, never the client's garbage.
    for h in headers_seen(tmp_path / "up.jsonl"):
        assert len(h["traceparent"]) == 55 and "tracestate" not in h
    assert password not in gw.output and ALPHA not in gw.output and wrong not in gw.output
    assert not any(w in gw.output for w in OTEL_WARNINGS), gw.output[-2000:]


class OddUsageUpstream:
    """An OpenAI-shaped server on a thread that reports `usage` with counts that are not whole numbers."""

    def __init__(self, usage: dict) -> None:
        self.usage = usage
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        assert started.wait(10)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        answer = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        message = {"choices": [answer]}
        if not body.get("stream"):
            return web.json_response({**message, "usage": self.usage})
        r = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await r.prepare(request)
        for event in ({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
                      {"choices": [], "usage": self.usage}):  # fmt: skip
            await r.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await r.write(b"data: [DONE]\n\n")
        return r

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": None, "completion_tokens": "7"}, {"prompt_tokens": -5, "completion_tokens": 1.5}],
    ids=["null-and-string", "negative-and-float"],
)
def test_an_upstream_reporting_odd_token_counts_still_answers_and_settles_the_teams_limits(tmp_path, start, usage):
    up = OddUsageUpstream(usage)
    try:
        fleet = write_fleet(
            tmp_path,
            f"server: {{log_format: json}}\nstate: {{store: 'sqlite:///{tmp_path}/state.db'}}\n"  # its own ledger
            f"auth: {{metrics_key: {METRICS_KEY}}}\n"
            f"teams:\n  alpha: {{keys: ['{ALPHA}'], limits: {{concurrency: 1, tokens_per_day: 1000000}}}}\n"
            f"deployments:\n  d: {{kind: openai, urls: ['{up.url}'], model: m}}\n"
            "routes:\n  chat: {deployments: [d]}\n",
        )
        gw = start(Gateway, fleet)
        auth = {"Authorization": f"Bearer {ALPHA}"}
        # Concurrency 1: were a request's lease not given back, the next would get a 429.
        for stream in (False, True, False, True):
            r = httpx.post(gw.url + "/chat/completions", json=chat_body(stream=stream), headers=auth)
            assert r.status_code == 200, r.text
        lines = eventually(
            lambda: (ls := [json.loads(x) for x in gw.output.splitlines() if '"modelfleet.access"' in x])
            and len(ls) == 4 and ls, 10, "four access lines",
        )  # fmt: skip
        assert all(line["status"] == 200 and line["prompt_tokens"] == 0 for line in lines)
        text = scrape(gw.base)
        served = 'modelfleet_requests_total{deployment="d",route="chat",status="200",team="alpha",variant="d"} 4.0'
        assert served in text
        assert "unhandled error" not in gw.output
    finally:
        up.stop()


class OddChoicesUpstream(OddUsageUpstream):
    """Streams events whose `choices` are not a list of objects."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await r.prepare(request)
        for event in ({"choices": "oops"}, {"choices": [1, None]}, {"choices": [{"delta": {"content": "hi"}}]},
                      {"choices": [], "usage": self.usage}):  # fmt: skip
            await r.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await r.write(b"data: [DONE]\n\n")
        return r


def test_an_upstream_streaming_odd_choices_is_relayed_not_crashed_on(tmp_path, start):
    up = OddChoicesUpstream({"prompt_tokens": 3, "completion_tokens": 2})
    try:
        fleet = write_fleet(
            tmp_path,
            f"deployments:\n  d: {{kind: openai, urls: ['{up.url}'], model: m}}\n"
            "routes:\n  chat: {deployments: [d]}\n",
        )
        gw = start(Gateway, fleet)
        r = httpx.post(gw.url + "/chat/completions", json=chat_body(stream=True))
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n"), r.text
        assert '"choices":"oops"' in r.text and "unhandled error" not in gw.output
    finally:
        up.stop()
