"""OpenAI-compatible servers over HTTP: vLLM, TGI's Messages API, llama.cpp, the embedded engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from modelfleet.backends import http1
from modelfleet.errors import UpstreamBusy, UpstreamError, UpstreamRejected, UpstreamTimeout
from modelfleet.observability.logging import redact
from modelfleet.observability.tracing import UPSTREAM
from modelfleet.values import Replica

_CONNECT_TIMEOUT = 10.0
_SNIPPET = 300


class OpenAIHTTPBackend:
    def __init__(self, api_key: str | None = None) -> None:
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None  # health probes only: off the hot path
        # Shorter than the keep-alive of the servers behind (uvicorn, so vLLM: 5 s), so the gateway drops an idle
        # connection before the server does, rather than racing it with a request.
        self._upstream = http1.Client(idle_timeout=4)
        self._static = b"Content-Type: application/json\r\n" + _lines(self._auth)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def _post(
        self, replica: Replica, path: str, body: bytes, request_id: str, timeout: float, stream: bool
    ) -> http1.Response:
        headers = self._static + b"X-Request-ID: " + request_id.encode() + b"\r\n"
        trace = UPSTREAM.get()  # W3C traceparent: this attempt's span, or the client's own
        if trace is not None:
            headers += _lines(trace)
        try:
            resp = await self._upstream.post(
                replica.url + path, body, headers, timeout, min(timeout, _CONNECT_TIMEOUT), stream
            )
        except TimeoutError:
            raise _timeout(replica, timeout) from None
        except ConnectionError as exc:
            raise _unreachable(replica, exc) from None
        if not 200 <= resp.status < 300:
            try:
                payload = await resp.read()
            except (ConnectionError, TimeoutError):
                payload = b""
            finally:
                resp.release()
            raise _rejected(replica, resp.status, payload, resp.headers.get("retry-after"))
        return resp

    async def send(self, replica: Replica, path: str, body: bytes, request_id: str, timeout: float) -> bytes:
        resp = await self._post(replica, path, body, request_id, timeout, stream=False)
        try:
            return await resp.read()  # already whole: the client waits for the end of a non-stream reply
        finally:
            resp.release()

    async def open_stream(self, replica: Replica, path: str, body: bytes, request_id: str, timeout: float) -> _Stream:
        return _Stream(await self._post(replica, path, body, request_id, timeout, stream=True), replica, timeout)

    async def probe(self, replica: Replica, timeout: float, path: str = "/models") -> str | None:
        try:
            async with self._client().get(
                replica.url + path, headers=self._auth, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                await resp.read()
                return None if resp.status < 400 else f"health check {path} answered {resp.status}"
        except TimeoutError:
            return f"health check {path} timed out after {timeout:g}s"
        except aiohttp.ClientError as exc:
            return f"health check {path} failed: {_describe(exc)}"

    async def aclose(self) -> None:
        await self._upstream.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Stream:
    __slots__ = ("_replica", "_resp", "_timeout")

    def __init__(self, resp: http1.Response, replica: Replica, timeout: float) -> None:
        self._resp = resp
        self._replica = replica
        self._timeout = timeout

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.chunks():
                yield chunk
        except TimeoutError:
            raise _timeout(self._replica, self._timeout, "between stream chunks") from None
        except ConnectionError as exc:
            raise UpstreamError(
                f"deployment {self._replica.deployment!r} replica {self._replica.name} "
                f"broke off the stream: {_describe(exc)}",
                code="upstream_stream_error",
            ) from None

    def close(self) -> None:
        # Wholly read: the connection goes back to the pool. Abandoned mid-stream: it is dropped, so the
        # upstream sees the disconnect and stops generating.
        self._resp.release()


def _lines(headers: dict[str, str]) -> bytes:
    lines = (f"{k}: {v}\r\n" for k, v in headers.items() if "\r" not in v and "\n" not in v)
    return b"".join(line.encode("utf-8", "surrogateescape") for line in lines)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection to {exc.host}:{exc.port} failed ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__


def _unreachable(replica: Replica, exc: BaseException) -> UpstreamError:
    if isinstance(exc, http1.BadResponse):  # it was reached, and answered what cannot be relayed
        return UpstreamError(f"deployment {replica.deployment!r} replica {replica.name} sent a bad reply: {exc}")
    return UpstreamError(
        f"deployment {replica.deployment!r} replica {replica.name} could not be reached: {_describe(exc)}",
        code="upstream_unreachable",
    )


def _timeout(replica: Replica, seconds: float, where: str = "") -> UpstreamTimeout:
    suffix = f" {where}" if where else ""
    return UpstreamTimeout(
        f"deployment {replica.deployment!r} replica {replica.name} did not answer within "
        f"the {seconds:.3g}s left of the request's deadline{suffix}"
    )


def _rejected(
    replica: Replica, status: int, payload: bytes, retry_after: str | None = None
) -> UpstreamError | UpstreamRejected:
    message, param, code = _error_fields(payload)
    who = f"deployment {replica.deployment!r} replica {replica.name}"
    if status >= 500:
        return UpstreamError(f"{who} failed with HTTP {status}: {message}")
    if status < 400:  # a redirect (or an odd 1xx): not followed, a relayed POST could not be
        return UpstreamError(f"{who} answered HTTP {status} instead of a reply; point its url at the server itself")
    if status in (408, 429):  # the upstream is busy, not the client wrong
        return UpstreamBusy(f"{who} is busy (HTTP {status}): {message}", retry_after)
    if status in (401, 403, 404, 405, 407):  # the gateway's credential or path is wrong: the deployment's fault
        return UpstreamError(f"{who} refused the gateway (HTTP {status}): {message}; check its url and api_key")
    return UpstreamRejected(status, f"{who} rejected the request: {message}", param=param, code=code)


def _error_fields(payload: bytes) -> tuple[str, str | None, str | None]:
    """The upstream's error, redacted: it may echo the credentials the gateway sent it."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        text = payload.decode("utf-8", "replace").strip()[:_SNIPPET]
        return redact(text or "(empty body)"), None, None
    err = doc.get("error", doc) if isinstance(doc, dict) else doc
    if isinstance(err, dict):
        msg = err.get("message") or err.get("detail") or orjson.dumps(err).decode()[:_SNIPPET]
        param, code = err.get("param"), err.get("code")
        return (
            redact(str(msg)[: _SNIPPET * 4]),
            param[:100] if isinstance(param, str) else None,  # relayed to the client: bounded like the message
            code[:100] if isinstance(code, str) else None,
        )
    return redact(str(err)[:_SNIPPET]), None, None
