"""The baseline: the least an aiohttp reverse proxy can do (no parsing, no routing, no metrics).

python benchmarks/bare_proxy.py UPSTREAM_BASE_URL PORT
"""

from __future__ import annotations

import logging
import sys

import aiohttp
import uvloop
from aiohttp import web


async def app_factory(upstream: str) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def forward(request: web.Request) -> web.StreamResponse:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = await request.read()
        async with session.post(upstream + request.path, data=body,
                                headers={"Content-Type": "application/json"}) as resp:  # fmt: skip
            if resp.content_type == "text/event-stream":
                out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await out.prepare(request)
                async for chunk in resp.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
            return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")

    async def close(_: web.Application) -> None:
        if session is not None:
            await session.close()

    app = web.Application()
    app.router.add_post("/{tail:.*}", forward)
    app.on_cleanup.append(close)
    return app


if __name__ == "__main__":
    upstream, port = sys.argv[1].rstrip("/").removesuffix("/v1"), int(sys.argv[2])
    uvloop.install()
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # wrk's closed connections are not news
    web.run_app(app_factory(upstream), host="127.0.0.1", port=port, access_log=None, print=None)
