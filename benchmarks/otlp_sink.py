"""An OTLP/HTTP endpoint that accepts and drops traces: what the tracing runs of gateway_overhead.py export to.

python benchmarks/otlp_sink.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web


async def traces(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


if __name__ == "__main__":
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
