"""The floor of one proxy hop: a TCP byte relay on uvloop protocols, no HTTP at all.

python benchmarks/tcp_relay.py UPSTREAM_PORT PORT

Each client connection gets its own upstream connection and bytes are copied both ways as they
come. What this adds over the upstream alone is what one more process in the path costs on this
machine (its wake-ups and loopback hops), before any proxy parses anything.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, port: int) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []  # what the client sent before the upstream connection was up
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        client = self.transport
        assert client is not None
        try:
            upstream, _ = await asyncio.get_running_loop().create_connection(
                lambda: _Upstream(client), "127.0.0.1", self.port
            )
        except OSError:
            client.close()  # the upstream is away: so is this hop
            return
        if client.is_closing():  # the client left while the upstream connection was made
            upstream.close()
            return
        self.upstream = upstream
        upstream.write(b"".join(self.early))

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def main(upstream_port: int, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Client(upstream_port), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
