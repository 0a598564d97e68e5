"""Request ids, OpenAI-shaped errors and CORS, applied to every request."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Collection

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestPayloadError

from modelfleet.api.drain import Drain, shutting_down
from modelfleet.api.proxy import CLIENT_CLOSED, REQUEST_ID, _StallWatch
from modelfleet.config import Cors
from modelfleet.errors import APIError, BodyTooLarge, InvalidRequest, unreadable_body
from modelfleet.observability.logging import request_id

log = logging.getLogger("modelfleet.api")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# A body below the transport's high-water mark (64 KiB) goes to the kernel without waiting on the client.
_WATCHED_BODY = 32 * 1024


def error_response(exc: APIError, rid: str) -> web.Response:
    return web.Response(
        status=exc.status,
        body=orjson.dumps(exc.body()),
        content_type="application/json",
        headers={**exc.headers, "X-Request-ID": rid},
    )


Observe = Callable[[web.Request, int, float], None]
_UNMET_EXPECTATION = web.RequestKey("unmet_expectation", str)


def context(drain: Drain, write_timeout: float, observe: Observe, recorded: Collection[Handler]) -> Middleware:
    """The middleware every request passes, whatever answers it (a route, a redirect, a 404/405 for a
    path no route has, aiohttp's own 404 for `OPTIONS *`): it gets an id (the client's X-Request-ID if
    sane), the id on its response, every error as OpenAI JSON, and `observe` (access log and metrics),
    but for the `recorded` handlers (the proxy's), which record themselves with more to say.

    It also keeps the drain's promise (api/drain.py), and writes a large JSON reply under the same
    write deadline as a stream (server.write_timeout), so a client that never reads cannot hold it.
    """

    @web.middleware
    async def with_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request.headers.get("X-Request-ID")
        if rid is None or not _VALID_ID.match(rid):
            rid = os.urandom(12).hex()
        request[REQUEST_ID] = rid
        request_id.set(rid)
        task = drain.enter(request)
        response: web.StreamResponse
        reached = False  # the handler ran: a recorded one (the proxy's) has logged the request itself
        try:
            if drain.draining:
                raise shutting_down("takes no new requests")
            if len(request.headers.getall("Authorization", ())) > 1:
                raise InvalidRequest("send one Authorization header, not several", param="Authorization")
            if _UNMET_EXPECTATION in request:
                raise _expectation_failed(request[_UNMET_EXPECTATION])
            reached = True
            response = await handler(request)
        except APIError as exc:
            response = error_response(exc, rid)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect: answered here, so it is logged and carries the id like any other
                response = web.Response(status=exc.status, reason=exc.reason, headers=exc.headers, body=exc.body)
            else:
                response = error_response(_from_http(exc, request), rid)
        except asyncio.CancelledError:
            if not drain.was_cut(task):
                raise
            response = error_response(shutting_down("its drain_timeout ran out"), rid)
        except (HttpProcessingError, RequestPayloadError) as exc:  # a body that cannot be read (its encoding)
            response = error_response(unreadable_body(exc), rid)
        except ConnectionResetError:  # the client left mid-reply: the proxy has billed and logged it already
            response = web.Response(status=499)  # aiohttp's attempt to send it fails quietly
        except Exception:
            log.exception("unhandled error on %s %r", request.method, request.path)
            response = error_response(APIError(f"internal error; quote request id {rid} when reporting it"), rid)
        finally:
            drain.leave(task)
        own = None if reached and request.match_info.handler in recorded else observe
        if not response.prepared:
            response.headers.setdefault("X-Request-ID", rid)
            if drain.draining:
                response.force_close()  # a client keeping this connection would find a closed gateway
            body = response.body if isinstance(response, web.Response) else None
            if isinstance(body, bytes) and len(body) > _WATCHED_BODY:
                await _write(request, response, write_timeout, own, started)
        if own is not None:
            own(request, response.status, time.perf_counter() - started)
        return response

    return with_context


async def expect(request: web.Request) -> None:
    """aiohttp's handling of `Expect:` (a 100 Continue), but for an expectation it cannot meet, which the
    middleware answers (417, OpenAI-shaped, with an id and a log line) instead of aiohttp in plain text."""
    value = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return
    if value.lower() != "100-continue":
        request[_UNMET_EXPECTATION] = value
        return
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp does: the answer's own bytes have not begun


def _expectation_failed(value: str) -> APIError:
    err = InvalidRequest(f"unknown Expect: {value[:100]!r}; only 100-continue is supported", param="Expect",
                         code="expectation_failed")  # fmt: skip
    err.status = 417
    return err


async def _write(
    request: web.Request, response: web.StreamResponse, timeout: float, observe: Observe | None, started: float
) -> None:
    """Write the reply here, under the write deadline, rather than leave it to aiohttp, which would wait
    for a client that never reads for as long as its connection stays open."""
    await response.prepare(request)
    stall = _StallWatch(request, response, timeout)
    try:
        await response.write_eof()
    except asyncio.CancelledError:
        if stall.stalled:
            log.warning("cut off a reply whose client took no bytes for %gs (server.write_timeout)", timeout)
            if observe is not None:
                observe(request, CLIENT_CLOSED, time.perf_counter() - started)
        raise
    finally:
        stall.cancel()


def _from_http(exc: web.HTTPException, request: web.Request) -> APIError:
    if exc.status == 404:
        err = InvalidRequest(f"unknown path {request.path}; the API lives under /v1", code="not_found")
    elif exc.status == 405:
        allow = exc.headers.get("Allow", "")
        err = InvalidRequest(f"method {request.method} is not allowed on {request.path}; allowed: {allow}",
                             code="method_not_allowed", headers={"Allow": allow})  # fmt: skip
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
