"""A fake OpenAI-compatible server over real HTTP, fast enough never to be the bottleneck.

    python -m modelfleet.testing.fake_upstream --port 9000 [--status 500] [--delay 0.5]
        [--chunks 16] [--chunk-delay 0.01] [--die-after 3] [--no-done] [--waiting 3 --kv-cache 0.5]
        [--headers-log FILE]

It answers /v1/chat/completions, /v1/completions (JSON or SSE), /v1/embeddings and /v1/models
with canned bodies (at most `max_tokens` tokens, like a real server), and can inject the failures
a gateway must survive: an error status, a slow first byte, a connection dropped mid-stream.
With --waiting / --kv-cache it also serves GET /metrics the way vLLM does. It speaks HTTP/1.1
keep-alive on a bare asyncio protocol (no framework) so a load test measures the gateway, not the fake.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
import zlib
from typing import Any

READY_LINE = "FAKE_UPSTREAM_READY"


class Behaviour:
    def __init__(self, args: argparse.Namespace) -> None:
        self.status = args.status
        self.delay = args.delay
        self.chunks = args.chunks
        self.chunk_delay = args.chunk_delay
        self.die_after = args.die_after
        self.done = not args.no_done
        self.model = args.model
        self.reply = args.reply
        self.gzip = args.gzip
        self.retry_after = args.retry_after
        self.error_message = args.error_message
        # --reply-when TEXT=REPLY: a chat whose messages contain TEXT is answered REPLY (a judge with opinions).
        self.rules = [tuple(rule.split("=", 1)) for rule in args.reply_when]
        self.metrics = _vllm_metrics(args.waiting, args.kv_cache) if args.waiting is not None else None
        self.requests = 0
        self.headers_log = args.headers_log  # a JSON line of each POST's headers (what a gateway forwarded)
        self.tasks: set[asyncio.Task[None]] = set()  # keep slow answers referenced until done


def _reply(b: Behaviour, body: bytes) -> str | None:
    if b.rules:
        text = "\n".join(str(m.get("content")) for m in json.loads(body).get("messages") or [])
        for pattern, reply in b.rules:
            if pattern in text:
                return reply
    return b.reply


def _chat_body(model: str, n_tokens: int, reply: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "tok " * n_tokens if reply is None else reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": n_tokens, "total_tokens": 12 + n_tokens},
        },
        separators=(",", ":"),
    ).encode()


def _completion_body(model: str, n_tokens: int) -> bytes:
    return json.dumps(
        {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": "tok " * n_tokens, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 12, "completion_tokens": n_tokens, "total_tokens": 12 + n_tokens},
        },
        separators=(",", ":"),
    ).encode()


def _events(model: str, n: int, chat: bool, usage: bool, reply: str | None = None) -> list[bytes]:
    out = []
    for i in range(n):
        if chat:
            text = "tok " if reply is None else (reply if i == 1 else "")  # a reply comes whole, in one event
            delta = {"role": "assistant", "content": ""} if i == 0 else {"content": text}
            choice = {"index": 0, "delta": delta, "finish_reason": "stop" if i == n - 1 else None}
            obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
        else:
            choice = {"index": 0, "text": "tok ", "finish_reason": "stop" if i == n - 1 else None}
            obj = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model}
        obj["choices"] = [choice]
        out.append(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")
    if usage:
        tokens = n - 1 if chat else n
        u = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}
        obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
        out.append(b"data: " + json.dumps({**obj, "choices": [], "usage": u}, separators=(",", ":")).encode() + b"\n\n")
    return out


def _vllm_metrics(waiting: float, kv: float) -> bytes:
    return (
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{model_name="fake-model"}} {waiting}\n'
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f'vllm:kv_cache_usage_perc{{model_name="fake-model"}} {kv}\n'
    ).encode()


def _max_tokens(body: bytes) -> int | None:
    for field in (b'"max_tokens":', b'"max_completion_tokens":'):
        at = body.find(field)
        if at >= 0:
            digits = body[at + len(field) :].lstrip()[:12]
            digits = digits[: len(digits) - len(digits.lstrip(b"0123456789"))]
            return max(1, int(digits)) if digits else None
    return None


def _sizes(body: bytes, chunks: int, chat: bool) -> tuple[int, int]:
    """(completion tokens of a JSON answer, events of a stream), never more tokens than max_tokens."""
    cap = _max_tokens(body)
    if cap is None:
        return chunks, chunks
    return min(chunks, cap), min(chunks, cap + 1 if chat else cap)  # a chat stream opens with a role-only event


_EMBEDDING = json.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3, 0.4]}],
        "model": "fake",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
).encode()


class FakeOpenAI(asyncio.Protocol):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.z: Any = None  # the gzip stream of the response being written, with --gzip
        self.auth = ""  # the last request's Authorization, for --error-message

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = head_end + 4 + length
            if len(self.buf) < total:
                return
            body = self.buf[head_end + 4 : total]
            self.buf = self.buf[total:]
            method, path = head.split(" ", 2)[:2]
            self.auth = headers.get("authorization", "")
            self.b.requests += 1
            if self.b.headers_log and method == "POST":
                with open(self.b.headers_log, "a") as log:
                    log.write(json.dumps({"path": path, "headers": headers}) + "\n")
            if method != "GET" and (self.b.delay or self.b.chunk_delay or self.b.die_after is not None):
                task = asyncio.ensure_future(self._slow(method, path, body))
                self.b.tasks.add(task)
                task.add_done_callback(self.b.tasks.discard)
            else:
                self._answer(method, path, body)

    def _write(self, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
        assert self.transport
        reason = b"OK" if status == 200 else b"Error"
        extra = b""
        if self.b.gzip and status == 200:  # whatever the request asked for, as some servers do
            body, extra = gzip.compress(body), b"Content-Encoding: gzip\r\n"
        if self.b.retry_after is not None and status != 200:
            extra += b"Retry-After: %d\r\n" % self.b.retry_after
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, reason, ctype, len(body), extra, body)
        )

    def _answer(self, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path.endswith("/models"):
            self._write(200, b'{"object":"list","data":[{"id":"%s","object":"model"}]}' % self.b.model.encode())
            return
        if method == "GET" and path == "/metrics" and self.b.metrics is not None:
            self._write(200, self.b.metrics, b"text/plain; version=0.0.4")
            return
        if self.b.status != 200:
            message = self.b.error_message or f"injected failure {self.b.status}"
            err = {"error": {"message": message.replace("{auth}", self.auth), "type": "server_error"}}
            self._write(self.b.status, json.dumps(err).encode())
            return
        if path.endswith("/embeddings"):
            if b'"max_tokens"' in body:  # as OpenAI does: embeddings take no such argument
                self._write(400, b'{"error":{"message":"Unrecognized request argument supplied: max_tokens",'
                                 b'"type":"invalid_request_error","param":"max_tokens"}}')  # fmt: skip
                return
            self._write(200, _EMBEDDING)
            return
        chat = path.endswith("/chat/completions")
        n, n_events = _sizes(body, self.b.chunks, chat)
        if b'"stream":true' in body.replace(b" ", b""):
            usage = b'"include_usage":true' in body.replace(b" ", b"")
            events = _events(self.b.model, n_events, chat, usage, _reply(self.b, body) if chat else None)
            self._stream_head()
            self._chunk(b"".join(events) + (b"data: [DONE]\n\n" if self.b.done else b""))
            self._chunk(b"")
            return
        if chat:
            self._write(200, _chat_body(self.b.model, n, _reply(self.b, body)))
        else:
            self._write(200, _completion_body(self.b.model, n))

    def _stream_head(self) -> None:
        assert self.transport
        self.z = zlib.compressobj(wbits=31) if self.b.gzip else None  # gzip, flushed event by event
        encoding = b"Content-Encoding: gzip\r\n" if self.z else b""
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n%sTransfer-Encoding: chunked\r\n\r\n" % encoding
        )

    def _chunk(self, data: bytes) -> None:
        """One chunk of the body; an empty one ends it (after the gzip trailer, when compressing)."""
        assert self.transport
        if self.z is not None:
            last = not data
            data = self.z.compress(data) + self.z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
            if last:
                self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
                data = b""
        self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def _slow(self, method: str, path: str, body: bytes) -> None:
        if self.b.delay:
            await asyncio.sleep(self.b.delay)
        if self.transport is None or self.transport.is_closing():
            return
        chat = path.endswith("/chat/completions")
        stream = b'"stream":true' in body.replace(b" ", b"")
        if not stream or self.b.status != 200 or method == "GET":
            if self.b.die_after is not None and method != "GET":
                self.transport.abort()  # the process "died" before answering
                return
            self._answer(method, path, body)
            return
        usage = b'"include_usage":true' in body.replace(b" ", b"")
        self._stream_head()
        reply = _reply(self.b, body) if chat else None
        for i, event in enumerate(_events(self.b.model, _sizes(body, self.b.chunks, chat)[1], chat, usage, reply)):
            if self.b.die_after is not None and i >= self.b.die_after:
                self.transport.abort()  # drop the connection mid-stream
                return
            self._chunk(event)
            if self.b.chunk_delay:
                await asyncio.sleep(self.b.chunk_delay)
            if self.transport.is_closing():
                return
        if self.b.done:
            self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


async def _main(args: argparse.Namespace) -> None:
    behaviour = Behaviour(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeOpenAI(behaviour), args.host, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"{READY_LINE} port={port}", flush=True)
    async with server:
        await server.serve_forever()


def parser() -> argparse.ArgumentParser:
    """The fake's options (also how fake_kube makes its pods: one parser, one set of defaults)."""
    p = argparse.ArgumentParser(prog="python -m modelfleet.testing.fake_upstream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--status", type=int, default=200, help="answer every generation request with this status")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before the first byte (not for GET)")
    p.add_argument("--chunks", type=int, default=16, help="stream events (and completion tokens) per answer")
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream events")
    p.add_argument("--die-after", type=int, default=None, help="drop the connection after N stream events")
    p.add_argument("--no-done", action="store_true", help="end streams without data: [DONE]")
    p.add_argument("--reply", help="the content of every chat answer (streamed in one event)")
    p.add_argument(
        "--reply-when",
        action="append",
        default=[],
        metavar="TEXT=REPLY",
        help="answer REPLY to a chat whose messages contain TEXT (first match; repeatable)",
    )
    p.add_argument("--gzip", action="store_true", help="compress every answer (JSON and streams), asked or not")
    p.add_argument("--retry-after", type=int, help="send this Retry-After with every error status")
    p.add_argument("--error-message", help="the message of injected errors; {auth} is the Authorization it got")
    p.add_argument("--waiting", type=float, help="serve GET /metrics with this vllm:num_requests_waiting")
    p.add_argument("--kv-cache", type=float, default=0.0, help="... and this vllm:kv_cache_usage_perc (0-1)")
    p.add_argument("--headers-log", help="append each POST's path and headers to this file (JSON lines)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        import uvloop

        uvloop.run(_main(args))
    except ImportError:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
