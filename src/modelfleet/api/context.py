"""Request ids, OpenAI-shaped errors and CORS, applied to every request."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from modelfleet.api.proxy import REQUEST_ID
from modelfleet.config import Cors
from modelfleet.errors import APIError, BodyTooLarge, InvalidRequest
from modelfleet.observability.logging import request_id

log = logging.getLogger("modelfleet.api")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def error_response(exc: APIError, rid: str) -> web.Response:
    return web.Response(
        status=exc.status,
        body=orjson.dumps(exc.body()),
        content_type="application/json",
        headers={**exc.headers, "X-Request-ID": rid},
    )


Observe = Callable[[web.Request, int, float], None]


def with_context(handler: Handler, observe: Observe | None = None) -> Handler:
    """Give the request an id (the client's X-Request-ID if sane), put it on the response, and answer
    every error as OpenAI JSON; `observe` (access log and metrics) for the routes the proxy does not
    record itself, so that every request is counted, a 401 on /v1/models as much as a chat.

    A plain wrapper rather than an aiohttp middleware: the middleware chain is rebuilt per request.
    """

    async def wrapped(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request.headers.get("X-Request-ID")
        if rid is None or not _VALID_ID.match(rid):
            rid = os.urandom(12).hex()
        request[REQUEST_ID] = rid
        request_id.set(rid)
        response: web.StreamResponse
        try:
            if len(request.headers.getall("Authorization", ())) > 1:
                raise InvalidRequest("send one Authorization header, not several", param="Authorization")
            response = await handler(request)
        except APIError as exc:
            response = error_response(exc, rid)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(_from_http(exc, request), rid)
        except ConnectionResetError:  # the client left mid-reply: the proxy has billed and logged it already
            response = web.Response(status=499)  # aiohttp's attempt to send it fails quietly
        except Exception:
            log.exception("unhandled error on %s %r", request.method, request.path)
            response = error_response(APIError(f"internal error; quote request id {rid} when reporting it"), rid)
        if not response.prepared:
            response.headers.setdefault("X-Request-ID", rid)
        if observe is not None:
            observe(request, response.status, time.perf_counter() - started)
        return response

    return wrapped


def _from_http(exc: web.HTTPException, request: web.Request) -> APIError:
    if exc.status == 404:
        err = InvalidRequest(f"unknown path {request.path}; the API lives under /v1", code="not_found")
    elif exc.status == 405:
        err = InvalidRequest(f"method {request.method} is not allowed on {request.path}", code="method_not_allowed")
    elif exc.status == 413:
        return BodyTooLarge(exc.text or "request body too large")
    else:
        err = InvalidRequest(exc.text or exc.reason)
    err.status = exc.status
    return err


class CORS:
    """Preflight answers and response headers for the origins listed in `server.cors`."""

    def __init__(self, settings: Cors) -> None:
        self.origins = set(settings.allow_origins)
        self.any_origin = "*" in self.origins
        self.allow_headers = ", ".join(settings.allow_headers)
        self.max_age = str(settings.max_age)

    def _allowed(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin is not None and (self.any_origin or origin in self.origins) else None

    async def preflight(self, request: web.Request) -> web.Response:
        origin = self._allowed(request)
        if origin is None:
            raise web.HTTPForbidden(text=f"origin {request.headers.get('Origin')!r} is not in server.cors")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": self.allow_headers,
                "Access-Control-Max-Age": self.max_age,
                "Vary": "Origin",
            },
        )

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = self._allowed(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, X-Modelfleet-Deployment"
            response.headers["Vary"] = "Origin"
