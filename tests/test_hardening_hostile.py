"""Hostile clients and hostile upstreams, second round: the inputs of issue 9's classes that its first tests
did not try. A real gateway process; upstreams are the fake, or raw asyncio servers (in a thread) that
write whatever bytes a test gives them.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import socket
import threading
import time

import httpx
import pytest
from conftest import Gateway, Upstream, chat_body, eventually, proxy_fleet, write_fleet

KEY = "hostile-team-key-0123456789"
ADMIN = "hostile-admin-key-0123456789"
TEAM = f"teams: {{q: {{keys: [{KEY}]}}}}"


class RawUpstream:
    """An upstream on 127.0.0.1 that answers POSTs with `answer(writer)` and GET /v1/models (health) with []."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET"):
                    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"data":[]}')
                    continue
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await self.answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _is_openai_error(r: httpx.Response) -> dict:
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


async def _endless_event(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n")
    piece = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
    for _ in range(1024):  # 64 MiB of one event that never ends
        w.write(piece)
        await w.drain()


async def _endless_headers(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nX-A: ")
    for _ in range(1024):
        w.write(b"a" * 65536)
        await w.drain()


def test_an_upstream_that_never_ends_its_event_or_its_headers_is_cut_off_and_blocks_no_one(tmp_path, start):
    events, heads, up = RawUpstream(_endless_event), RawUpstream(_endless_headers), start(Upstream)
    try:
        gw = start(Gateway, proxy_fleet(tmp_path, {"events": events.url, "heads": heads.url, "ok": up.url}))
        with httpx.Client(timeout=30) as c:
            done: dict[str, httpx.Response] = {}
            stream = threading.Thread(target=lambda: done.setdefault("r", c.post(
                gw.url + "/chat/completions", json={**chat_body("events"), "stream": True})))  # fmt: skip
            stream.start()
            # Meanwhile everyone else is served at once: the gateway's loop is not busy copying that event.
            slowest = 0.0
            while stream.is_alive():
                t = time.perf_counter()
                assert c.post(gw.url + "/chat/completions", json=chat_body("ok")).status_code == 200
                slowest = max(slowest, time.perf_counter() - t)
            stream.join()
            assert slowest < 0.5
            r = done["r"]
            assert r.status_code == 200  # the stream had begun: it ends with an error event naming the deployment
            last = json.loads(r.text.strip().splitlines()[-1].removeprefix("data: "))
            assert "deployment 'events'" in last["error"]["message"] and "16 MiB" in last["error"]["message"]

            r = c.post(gw.url + "/chat/completions", json=chat_body("heads"))
            assert r.status_code == 502
            assert "deployment 'heads'" in _is_openai_error(r)["message"]
            assert "exceed 64 KiB" in r.json()["error"]["message"]
            assert c.post(gw.url + "/chat/completions", json=chat_body("ok")).status_code == 200
        assert "Traceback" not in gw.output
    finally:
        events.close()
        heads.close()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_odd_bytes_in_a_key_and_a_body_in_no_encoding_are_4xx_not_500(tmp_path, start):
    up = start(Upstream)
    extra = f"auth: {{admin_key: {ADMIN}, metrics_key: {ADMIN}-m}}\nteams: {{q: {{keys: [{KEY}]}}}}"
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}, extra=extra))
    port = int(gw.base.rsplit(":", 1)[1])
    body = json.dumps(chat_body("up")).encode()
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/v1/usage"),
                         ("GET", "/admin/teams"), ("GET", "/metrics")):  # fmt: skip
        # Latin-1 bytes, which aiohttp hands on as surrogates: once a 500 with a traceback.
        sent = body if method == "POST" else b""
        out = _raw(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
                   + b"Authorization: Bearer k\xe9y\xff\r\nContent-Type: application/json\r\n"
                   + b"Content-Length: %d\r\n\r\n%s" % (len(sent), sent))  # fmt: skip
        assert out.startswith(b"HTTP/1.1 401 "), (path, out[:200])
        assert b'"invalid_request_error"' in out

    # A body that says it is gzip and is not: once a 500 and an ERROR traceback from aiohttp.
    r = httpx.post(gw.url + "/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Encoding": "gzip"})  # fmt: skip
    assert r.status_code == 400
    assert "could not be read" in _is_openai_error(r)["message"]
    r = httpx.post(gw.base + "/admin/teams", content=body,
                   headers={"Authorization": f"Bearer {ADMIN}", "Content-Encoding": "deflate"})  # fmt: skip
    assert r.status_code == 400 and "could not be read" in _is_openai_error(r)["message"]
    assert httpx.post(gw.url + "/chat/completions", json=chat_body("up"),
                      headers={"Authorization": f"Bearer {KEY}"}).status_code == 200  # fmt: skip
    time.sleep(0.3)  # aiohttp logs what it drains after the answer
    assert "Traceback" not in gw.output and "ERROR" not in gw.output


def test_errors_name_a_map_by_its_name_and_echo_no_huge_value(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}))
    r = httpx.post(gw.url + "/chat/completions", json={**chat_body("up"), "logit_bias": {"abc": 1}})
    err = _is_openai_error(r)
    assert (r.status_code, err["param"]) == (400, "logit_bias")
    assert "'abc'" in err["message"]
    huge = "x" * 1_000_000
    for body in ({**chat_body("up"), "temperature": huge}, {**chat_body("up"), huge: 1}, chat_body(huge)):
        r = httpx.post(gw.url + "/chat/completions", json=body)
        assert r.status_code in (400, 404) and len(r.content) < 2000, (r.status_code, len(r.content))
        _is_openai_error(r)


def test_a_cancelled_request_with_many_choices_is_billed_each_of_them(tmp_path, start):
    up = start(Upstream, "--delay", "5")  # still generating when the client gives up
    gw = start(
        Gateway,
        proxy_fleet(tmp_path, {"up": up.url}, extra=f"teams: {{q: {{keys: [{KEY}], limits: {{tpm: 100000}}}}}}"),
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    chat = {**chat_body("up"), "n": 4, "max_tokens": 50}
    completion = {"model": "up", "prompt": "x", "n": 2, "best_of": 3, "max_tokens": 10}
    for path, body in (("/chat/completions", chat), ("/completions", completion)):
        try:
            httpx.post(gw.url + path, json=body, headers=auth, timeout=1)
            raise AssertionError("the reply came before the client gave up")
        except httpx.ReadTimeout:
            pass
        gw.wait_for(f"POST /v1{path} 499", 10)

    def billed() -> int:
        rows = httpx.get(gw.url + "/usage", headers=auth, params={"by": "team"}).json()["data"]
        return rows[0]["completion_tokens"] if rows else 0

    # 4 choices of 50, and best_of 3 of 10: what the deployment was asked to generate, as admission reserved.
    assert eventually(lambda: billed() == 4 * 50 + 3 * 10 or None, 5, "both cancelled requests are in the ledger")
    r = httpx.post(gw.url + "/completions", json={"model": "up", "prompt": "x", "best_of": 21}, headers=auth)
    assert (r.status_code, r.json()["error"]["param"]) == (400, "best_of")


async def _stream_without_usage(w: asyncio.StreamWriter) -> None:
    events = [{"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}] * 3
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = b"".join(b"data: %s\n\n" % json.dumps({"model": "m", **e}).encode() for e in events) + b"data: [DONE]\n\n"
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_a_stream_from_a_deployment_that_sends_no_usage_is_billed_what_was_relayed(tmp_path, start):
    terse = RawUpstream(_stream_without_usage)  # as servers that ignore stream_options.include_usage do
    try:
        gw = start(Gateway, proxy_fleet(tmp_path, {"terse": terse.url}, extra=TEAM))
        auth = {"Authorization": f"Bearer {KEY}"}
        r = httpx.post(gw.url + "/chat/completions", json={**chat_body("terse"), "stream": True}, headers=auth)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")

        def billed() -> int:
            rows = httpx.get(gw.url + "/usage", headers=auth, params={"by": "team"}).json()["data"]
            return rows[0]["completion_tokens"] if rows else 0

        assert eventually(lambda: billed() == 4 or None, 5, "the stream is in the ledger")  # one per event relayed
    finally:
        terse.close()


_DEEP = b"[" * 300 + b"]" * 300  # orjson parses it, but will not encode past 255 levels


_CALLS = itertools.count(1)


async def _deep_or_odd(w: asyncio.StreamWriter) -> None:
    n = next(_CALLS)
    if n == 1:  # a JSON reply nested too deeply
        body = b'{"choices":[],"x":%s}' % _DEEP
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    elif n == 2:  # a stream event nested too deeply
        ev = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"x":%s}\n\ndata: [DONE]\n\n' % _DEEP
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(ev), ev))
    elif n == 3:  # busy, with a Retry-After no client should be told
        w.write(b"HTTP/1.1 429 Too Many\r\nRetry-After: 99999999999999999999\r\nContent-Length: 2\r\n\r\n{}")
    else:  # gzip, spelled in capitals (tokens are case-insensitive)
        body = gzip.compress(b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}')
        w.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: GZIP\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_replies_the_gateway_cannot_reencode_are_502_not_500(tmp_path, start):
    odd = RawUpstream(_deep_or_odd)
    try:
        gw = start(Gateway, proxy_fleet(tmp_path, {"odd": odd.url}))
        with httpx.Client(timeout=10) as c:
            r = c.post(gw.url + "/chat/completions", json=chat_body("odd"))
            assert r.status_code == 502 and "deployment 'odd'" in _is_openai_error(r)["message"]
            r = c.post(gw.url + "/chat/completions", json={**chat_body("odd"), "stream": True})
            last = json.loads(r.text.strip().splitlines()[-1].removeprefix("data: "))
            assert "deployment 'odd'" in last["error"]["message"] and "nested too deeply" in last["error"]["message"]
            r = c.post(gw.url + "/chat/completions", json=chat_body("odd"))
            assert (r.status_code, r.headers["Retry-After"]) == (429, "1")
            r = c.post(gw.url + "/chat/completions", json=chat_body("odd"))
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
        assert "Traceback" not in gw.output
    finally:
        odd.close()


def test_a_sticky_header_with_any_bytes_routes_and_is_not_a_500(tmp_path, start):
    up = start(Upstream)
    path = proxy_fleet(tmp_path, {"up": up.url})
    path.write_text(
        path.read_text().replace("{deployments: [up]}", '{deployments: [up], sticky: "header:X-Session-ID"}')
    )
    gw = start(Gateway, path)
    body = json.dumps(chat_body("up")).encode()
    out = _raw(int(gw.base.rsplit(":", 1)[1]),
               b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Session-ID: s\xe9\xff\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    assert "Traceback" not in gw.output


async def _breaks_off(w: asyncio.StreamWriter) -> None:
    event = b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100000\r\n\r\n" + event * 3)
    await w.drain()
    w.transport.abort()  # mid-stream, before any usage


def test_a_stream_its_deployment_breaks_off_is_billed_what_was_relayed(tmp_path, start):
    broken = RawUpstream(_breaks_off)
    try:
        gw = start(Gateway, proxy_fleet(tmp_path, {"broken": broken.url}, extra=f"teams: {{q: {{keys: [{KEY}]}}}}"))
        auth = {"Authorization": f"Bearer {KEY}"}
        r = httpx.post(gw.url + "/chat/completions", json={**chat_body("broken"), "stream": True}, headers=auth)
        assert r.text.count("tok ") == 3 and "deployment 'broken'" in r.text.strip().splitlines()[-1]

        def billed() -> int:
            rows = httpx.get(gw.url + "/usage", headers=auth, params={"by": "team"}).json()["data"]
            return rows[0]["completion_tokens"] if rows else 0

        assert eventually(lambda: billed() == 3 or None, 5, "the broken stream is in the ledger")
    finally:
        broken.close()


@pytest.mark.slow
def test_the_engine_says_plainly_what_it_cannot_take(tmp_path, start):
    gw = start(Gateway, write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments: {{smollm2: {{kind: llama-cpp, threads: 1}}}}
routes: {{smollm2: {{deployments: [smollm2]}}}}
"""), timeout=180)  # fmt: skip
    user = [{"role": "user", "content": "hi"}]
    call = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    cases = [  # once an AssertionError, a TypeError or an AttributeError from inside llama-cpp-python
        ("/completions", {"prompt": "", "max_tokens": 2}, "prompt", "prompt is empty"),
        ("/completions", {"prompt": "hi", "echo": True, "max_tokens": 2}, "echo", "echo is not supported"),
        ("/completions", {"prompt": "hi", "echo": True, "stream": True}, "echo", "echo is not supported"),
        ("/chat/completions", {"messages": [*user, {"role": "assistant", "content": None, "tool_calls": call}]},
         "messages", "tool calls are not supported"),
        ("/chat/completions", {"messages": user, "response_format": {"type": "json_schema", "json_schema": 5}},
         "response_format.json_schema", "must be an object"),
    ]  # fmt: skip
    for path, body, param, message in cases:
        r = httpx.post(gw.url + path, json={"model": "smollm2", **body}, timeout=120)
        err = _is_openai_error(r)
        assert (r.status_code, err["param"]) == (400, param), (path, body, r.text[:300])
        assert message in err["message"] and "Error:" not in err["message"], err["message"]
    r = httpx.post(gw.url + "/chat/completions", json={"model": "smollm2", "messages": user, "max_tokens": 2})
    assert r.status_code == 200


_TOK = b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'


async def _done_then_holds(w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100000\r\n\r\n")
    w.write(_TOK * 2 + b"data: [DONE]\n\n")  # then the connection stays open, the body never complete
    await asyncio.sleep(30)


async def _error_after_tokens(w: asyncio.StreamWriter) -> None:
    body = _TOK * 2 + b'data: {"error":{"message":"engine died"}}\n\n'
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_a_stream_is_answered_at_done_and_what_came_before_an_error_is_delivered(tmp_path, start):
    holds, fails = RawUpstream(_done_then_holds), RawUpstream(_error_after_tokens)
    try:
        gw = start(Gateway, proxy_fleet(tmp_path, {"holds": holds.url, "fails": fails.url}))
        t0 = time.monotonic()
        r = httpx.post(gw.url + "/chat/completions", json={**chat_body("holds"), "stream": True}, timeout=20)
        assert r.status_code == 200 and r.text.count("tok ") == 2 and r.text.endswith("data: [DONE]\n\n")
        assert time.monotonic() - t0 < 5  # answered at [DONE], not when the deployment lets go

        r = httpx.post(gw.url + "/chat/completions", json={**chat_body("fails"), "stream": True})
        assert r.text.count("tok ") == 2 and "engine died" in r.text.strip().splitlines()[-1]
    finally:
        holds.close()
        fails.close()
