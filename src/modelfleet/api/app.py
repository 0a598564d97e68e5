"""The HTTP surface: OpenAI routes (each one line into the proxy), health, readiness, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from modelfleet.api.middleware import CORS, request_context, stamp_request_id
from modelfleet.api.proxy import CHAT, COMPLETIONS, EMBEDDINGS, Proxy
from modelfleet.config import Cors
from modelfleet.observability.metrics import CONTENT_TYPE, GatewayMetrics


def create_app(
    proxy: Proxy,
    *,
    metrics: GatewayMetrics,
    readiness: Callable[[], tuple[bool, dict[str, Any]]],
    models: list[dict[str, Any]],
    cors: Cors,
) -> web.Application:
    models_body = orjson.dumps({"object": "list", "data": models})

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await proxy.handle(request, CHAT)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await proxy.handle(request, COMPLETIONS)

    async def embeddings(request: web.Request) -> web.StreamResponse:
        return await proxy.handle(request, EMBEDDINGS)

    async def list_models(_: web.Request) -> web.Response:
        return web.Response(body=models_body, content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        ready, detail = readiness()
        return web.Response(
            status=200 if ready else 503,
            body=orjson.dumps({"ready": ready, **detail}),
            content_type="application/json",
        )

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    # The proxy enforces server.max_body_bytes with a clear message; aiohttp's own cap is a backstop.
    app = web.Application(middlewares=[request_context], client_max_size=proxy.max_body_bytes)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.on_response_prepare.append(stamp_request_id)
    if cors.allow_origins:
        policy = CORS(cors)
        app.router.add_route("OPTIONS", "/{tail:.*}", policy.preflight)
        app.on_response_prepare.append(policy.on_prepare)
    return app
