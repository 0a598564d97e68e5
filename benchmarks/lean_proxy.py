"""The floor of an HTTP proxy in Python: httptools on uvloop protocols and modelfleet's upstream client.

python benchmarks/lean_proxy.py UPSTREAM_BASE_URL PORT

No framework, no routing, no JSON parsing, no auth, metrics or logs: each request's body is POSTed to
the same path upstream (`backends/http1.py`, the client the gateway uses) and the reply relayed, a
stream chunk by chunk. What it adds over the upstream alone is the least any Python proxy that parses
HTTP on both sides adds here: a lower reference than the bare aiohttp proxy, for the latency goals.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

from modelfleet.backends.http1 import Client


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: str, client: Client) -> None:
        self.upstream, self.client = upstream, client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.url = b""
        self.turn: asyncio.Future[None] | None = None  # the reply before this one: pipelined replies keep order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body, url, self.url = b"".join(self.body), [], self.url, b""
        self.turn = asyncio.ensure_future(self._answer(url.decode("latin-1"), body, self.turn))

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    async def _answer(self, path: str, body: bytes, before: asyncio.Future[None] | None) -> None:
        if before is not None:
            await before
        try:
            reply = await self.client.post(
                self.upstream + path, body, b"Content-Type: application/json\r\n", 30.0, 5.0, stream=True
            )
        except ConnectionError:
            self._write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            kind = reply.headers.get("content-type", "application/json").encode("latin-1")
            head = b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\n" % (reply.status, kind)
            if kind.startswith(b"text/event-stream"):
                self._write(head + b"Transfer-Encoding: chunked\r\n\r\n")
                async for chunk in reply.chunks():
                    self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self._write(b"0\r\n\r\n")
            else:
                data = await reply.read()
                self._write(head + b"Content-Length: %d\r\n\r\n" % len(data) + data)
        except ConnectionError:
            reply.close()
            if self.transport is not None:
                self.transport.close()
            return
        reply.release()


async def main(upstream: str, port: int) -> None:
    client = Client()
    server = await asyncio.get_running_loop().create_server(lambda: _Connection(upstream, client), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1].rstrip("/").removesuffix("/v1"), int(sys.argv[2])))
