"""The HTTP surface: OpenAI routes (each one line into the proxy), health, readiness, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from modelfleet.access import keys
from modelfleet.api import openapi
from modelfleet.api.admin import AdminAPI
from modelfleet.api.context import CORS, context, expect
from modelfleet.api.drain import Drain
from modelfleet.api.proxy import CHAT, COMPLETIONS, EMBEDDINGS, REQUEST_ID, Proxy
from modelfleet.config import Cors
from modelfleet.console import console_routes
from modelfleet.errors import Unauthorized
from modelfleet.observability.access_log import AccessLog
from modelfleet.observability.metrics import CONTENT_TYPE, GatewayMetrics


def create_app(
    proxy: Proxy,
    *,
    metrics: GatewayMetrics,
    readiness: Callable[[], tuple[bool, dict[str, Any]]],
    models: list[dict[str, Any]],
    cors: Cors,
    admin: AdminAPI,
    drain: Drain,
    access_log: AccessLog | None = None,
    metrics_key: SecretStr | None = None,
) -> web.Application:
    models_body = orjson.dumps({"object": "list", "data": models})
    gate = proxy.gate

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await proxy.handle(request, CHAT)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await proxy.handle(request, COMPLETIONS)

    async def embeddings(request: web.Request) -> web.StreamResponse:
        return await proxy.handle(request, EMBEDDINGS)

    async def list_models(request: web.Request) -> web.Response:
        caller = await gate.authenticate(request.headers.get("Authorization"))
        if caller is None or caller.routes is None:
            return web.Response(body=models_body, content_type="application/json")
        mine = [m for m in models if caller.may_use(m["id"])]  # a team sees only its own routes
        return web.Response(body=orjson.dumps({"object": "list", "data": mine}), content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        ready, detail = readiness()
        return web.Response(
            status=200 if ready else 503,
            body=orjson.dumps({"ready": ready, **detail}),
            content_type="application/json",
        )

    openapi_body = orjson.dumps(openapi.document())

    async def openapi_json(_: web.Request) -> web.Response:
        return web.Response(body=openapi_body, content_type="application/json")

    scrape_keys = [k.get_secret_value() for k in (admin.admin_key, metrics_key) if k is not None]

    async def prometheus(request: web.Request) -> web.Response:
        if gate.directory.enforcing:  # team names and usage are in there: not for every team's key
            key = keys.bearer(request.headers.get("Authorization"))
            if key is None or not any([keys.same(key, k) for k in scrape_keys]):  # a list: no short cut in timing
                raise Unauthorized("/metrics names every team: it needs auth.metrics_key or auth.admin_key "
                                   "as 'Authorization: Bearer <key>'")  # fmt: skip
        return web.Response(body=await metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def unknown_path(request: web.Request) -> web.Response:
        allowed: set[str] = set()  # the methods of the routes whose path this is (405 and Allow), if any (404)
        for resource in app.router.resources():
            if resource.canonical != "/{tail}":
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    def observe(request: web.Request, status: int, seconds: float) -> None:
        path = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        metrics.api_call(path if path != "/{tail}" else "other", status)
        if access_log is not None:
            access_log.record(request[REQUEST_ID], request.method, request.path, status, seconds * 1000, "", "", "")

    # The proxy enforces server.max_body_bytes with a clear message; aiohttp's own cap is a backstop.
    app = web.Application(
        client_max_size=proxy.max_body_bytes,
        # The proxy's routes record themselves (access log, metrics); the middleware records the rest.
        middlewares=[context(drain, proxy.write_timeout, observe, {chat_completions, completions, embeddings})],
    )

    def add(method: str, path: str, handler: Handler, *, head: bool = False) -> None:
        if head:  # add_get: HEAD as well
            app.router.add_get(path, handler, expect_handler=expect)
        else:
            app.router.add_route(method, path, handler, expect_handler=expect)

    add("POST", "/v1/chat/completions", chat_completions)
    add("POST", "/v1/completions", completions)
    add("POST", "/v1/embeddings", embeddings)
    add("GET", "/v1/models", list_models, head=True)
    add("GET", "/healthz", healthz, head=True)
    add("GET", "/health", healthz, head=True)  # vLLM's, TGI's and llama.cpp's name
    add("GET", "/readyz", readyz, head=True)
    add("GET", "/metrics", prometheus)
    add("GET", "/openapi.json", openapi_json)
    for method, path, handler in [*admin.routes(), *console_routes()]:
        add(method, path, handler)
    if cors.allow_origins:
        policy = CORS(cors)
        add("OPTIONS", r"/{tail:[\s\S]*}", policy.preflight)
        app.on_response_prepare.append(policy.on_prepare)
    # OpenAI-shaped 404/405, not aiohttp's text, for any path at all (a %0A in it too).
    add("*", r"/{tail:[\s\S]*}", unknown_path)
    return app
