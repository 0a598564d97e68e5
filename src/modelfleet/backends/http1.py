"""A lean keep-alive HTTP/1.1 client for calls to deployments: one write per request, httptools to parse.

Every upstream call on the proxy path has one shape: POST a JSON body, read back JSON or an event stream.
aiohttp's general client spent more CPU per request than the rest of the gateway put together
(benchmarks/gateway_overhead.py), so that one shape gets a client of its own: a pool of idle connections
per origin, the request head built from cached bytes, one timer per exchange instead of one per read.
Health probes and everything off the hot path keep using aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

_PAUSE_AT = 1 << 20  # buffered response bytes before the socket stops reading (a slow consumer)
# Bounds on what one reply may make the gateway hold, so that no upstream (broken or hostile) can exhaust the
# memory every other request shares: its head, a whole JSON body (decoded), and what one compressed piece
# may expand to (a gzip bomb is refused before it is inflated, not after).
MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 1024 * 1024
MAX_INFLATE = 16 * 1024 * 1024


class ConnectFailed(ConnectionError):
    """The TCP (or TLS) connection could not be made."""


class Disconnected(ConnectionError):
    """The server closed the connection before its reply was complete."""


class BadResponse(ConnectionError):
    """The server's bytes are not HTTP/1.1, or not in a content encoding the gateway can decode."""


class Response:
    """The head of a reply; its body arrives through `read()` or `chunks()`, then `release()` or `close()`."""

    __slots__ = ("_conn", "_done", "headers", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self._done = False  # released or closed: the connection may already carry another request
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        c = self._conn
        parts: list[bytes] = []
        while not c.complete:
            parts += c.take()  # a stream's reply (an error body) is taken as it comes, so a paused socket reads on
            await c.wait()
        parts += c.take()
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        c = self._conn
        while True:
            data = c.take()
            if data:
                yield b"".join(data) if len(data) > 1 else data[0]
                if self._done:  # released while the reader held a chunk (the drain's end_streams)
                    raise Disconnected("the reply was given up while it was being read")
            elif c.complete:
                return
            else:
                await c.wait()

    @property
    def complete(self) -> bool:
        return self._conn.complete

    def release(self) -> None:
        """Done with it: a wholly read reply's connection goes back to the pool, any other is closed.
        Once only: a second call would end the exchange another request has on it by then."""
        if not self._done:
            self._done = True
            self._conn.finish()

    def close(self) -> None:
        """Abandon the reply: the connection is dropped, so the server sees the client go."""
        if not self._done:
            self._done = True
            self._conn.abort()


class Client:
    def __init__(self, idle_timeout: float = 30.0, max_body: int = MAX_BODY) -> None:
        self._idle_timeout = idle_timeout
        self._max_body = max_body
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._heads: dict[str, tuple[_Pool, bytes]] = {}

    async def post(
        self, url: str, body: bytes, headers: bytes, timeout: float, connect_timeout: float, stream: bool
    ) -> Response:
        """POST `body` with `headers` (ready CRLF-terminated lines); the reply's head, or the whole reply
        unless `stream`. `timeout` bounds the whole exchange, or for a stream its first byte and every gap."""
        got = self._heads.get(url)
        if got is None:
            got = self._head(url)
        pool, head = got
        conn = await pool.acquire(connect_timeout)
        try:
            conn.send(head + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body, timeout, stream)
            while conn.status == 0 or (not stream and not conn.complete):
                await conn.wait()
        except BaseException:
            conn.abort()
            raise
        return Response(conn)

    def _head(self, url: str) -> tuple[_Pool, bytes]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"not an http(s) URL: {url!r}")  # a 502 that names it, as any unreachable replica
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        key = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(parts.hostname, port, tls, self._idle_timeout, self._max_body)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        head = f"POST {target} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")
        if len(self._heads) > 1024:
            self._heads.clear()
        self._heads[url] = (pool, head)
        return pool, head

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._heads.clear()


class _Pool:
    """Idle keep-alive connections to one origin, newest first (the most likely to be still open)."""

    def __init__(self, host: str, port: int, tls: bool, idle_timeout: float, max_body: int) -> None:
        self.host, self.port = host, port
        self.max_body = max_body
        self.ssl = ssl.create_default_context() if tls else None
        self.idle: list[_Conn] = []
        self.idle_timeout = idle_timeout
        self.closed = False

    async def acquire(self, connect_timeout: float) -> _Conn:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port, ssl=self.ssl)
        except TimeoutError:
            raise ConnectFailed(f"connection to {self.host}:{self.port} timed out after {connect_timeout:g}s") from None
        except OSError as exc:
            raise ConnectFailed(f"connection to {self.host}:{self.port} failed ({exc.strerror or exc})") from None
        return conn

    def put(self, conn: _Conn) -> None:
        if self.closed:
            conn.abort()
            return
        conn.idle_since = now = asyncio.get_running_loop().time()
        idle = self.idle
        # acquire() takes the newest, so after a burst the oldest would idle open for ever: expire them here.
        while idle and (idle[0].closed or now - idle[0].idle_since > self.idle_timeout):
            idle.pop(0).abort()
        idle.append(conn)

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class _Conn(asyncio.Protocol):
    """One connection, one exchange at a time: the parser's callbacks fill the reply, a future wakes its reader."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.max_body = pool.max_body
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.buffered = 0
        self.size = 0  # of a JSON body
        self.bodies = 0  # body pieces so far
        self.overhead = 0  # bytes read since the last piece of body: a head, chunk framing, trailers
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timeout = 0.0
        self.stream = False
        self.last = 0.0
        self.decoder: zlib._Decompress | None = None
        self.paused = False
        self.busy = False
        self.keep_alive = False

    # -- the exchange, from the caller's side

    def reusable(self) -> bool:
        if self.closed or self.loop.time() - self.idle_since > self.pool.idle_timeout:
            self.abort()
            return False
        return True

    def send(self, data: bytes, timeout: float, stream: bool) -> None:
        self.timeout, self.stream = timeout, stream
        self.busy = True
        self.last = now = self.loop.time()
        self.timer = self.loop.call_at(now + timeout, self._expire)
        assert self.transport is not None
        self.transport.write(data)

    async def wait(self) -> None:
        if self.error is not None:
            raise self.error
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> list[bytes]:
        if self.error is not None:
            raise self.error
        body, self.body, self.buffered = self.body, [], 0
        if self.paused:
            self._resume()
        return body

    def finish(self) -> None:
        # A reply that came before our request was all sent (an early 413): what is still unsent would reach
        # the server as the head of the next request on this connection, so it is not kept.
        sent = self.transport is not None and not self.transport.get_write_buffer_size()
        if self.complete and self.keep_alive and sent and not self.closed and self.error is None:
            if self.paused:  # the reply ended in a buffer nobody took: the next exchange must be read
                self._resume()
            self._stop_timer()
            self._reset()
            self.pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self._stop_timer()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def _resume(self) -> None:
        self.paused = False
        self.last = self.loop.time()  # the gap runs from when we read again, not from the server's last bytes
        if self.transport is not None:
            self.transport.resume_reading()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail(self, exc: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _expire(self) -> None:
        self.timer = None
        if self.complete:
            return
        now = self.loop.time()
        if self.stream and self.status and (self.paused or now - self.last < self.timeout):
            # A stream's bound is on each gap: re-arm from its last bytes, rather than one timer per read.
            # While paused the wait is on our own reader, not the server: no gap is counted (as aiohttp).
            self.timer = self.loop.call_at((now if self.paused else self.last) + self.timeout, self._expire)
            return
        self._fail(TimeoutError())
        self.abort()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:  # bytes nobody asked for: the connection can no longer be trusted
            self.abort()
            return
        if self.stream:
            self.last = self.loop.time()
        try:
            bodies = self.bodies
            self.parser.feed_data(data)
            if self.bodies == bodies:  # not a byte of body in this read (httptools holds any header it is in)
                self.overhead += len(data)
                if self.overhead > MAX_HEAD:
                    raise BadResponse(f"the server's reply headers (or trailers) exceed {MAX_HEAD // 1024} KiB")
            else:
                self.overhead = 0
        except BadResponse as exc:
            self._fail(exc)
            self.abort()
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the server tried to upgrade the connection"))
            self.abort()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__  # one of ours (a bound, a second reply) or zlib's
            self._fail(
                cause if isinstance(cause, BadResponse) else BadResponse(f"the server's reply is invalid ({cause})")
            )
            self.abort()
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"the server's reply is not valid HTTP/1.1 ({exc})"))
            self.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.complete:
            return
        framed = "content-length" in self.headers or "transfer-encoding" in self.headers
        if exc is None and self.status and not framed:
            self._end()  # a reply delimited by the end of the connection (HTTP/1.0 style); a reset truncates it
        else:
            self._fail(Disconnected("the server closed the connection"))

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # a body longer than its framing: its tail would be taken for the next request's reply
            raise BadResponse("the server sent bytes past the end of its reply")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim reply (100 Continue, 103 Early Hints): the real one follows
            self.headers = {}
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is complete
        encoding = self.headers.get("content-encoding")
        if encoding and encoding != "identity":
            if encoding.lower() in ("gzip", "x-gzip", "deflate"):  # a token, case-insensitive
                self.decoder = zlib.decompressobj(47)  # gzip or zlib, told apart by their headers
            else:
                self._fail(
                    BadResponse(
                        f"the server replied in Content-Encoding {encoding!r}; only gzip and deflate are decoded"
                    )
                )
                self.abort()
                return
        if self.stream:
            self._wake()

    def on_body(self, data: bytes) -> None:
        if self.decoder is not None:
            data = self.decoder.decompress(data, MAX_INFLATE)
            if self.decoder.unconsumed_tail:
                raise BadResponse(f"a compressed piece of the server's reply expands past {MAX_INFLATE >> 20} MiB")
        self.body.append(data)
        self.bodies += 1
        if not self.stream:
            self.size += len(data)
            if self.size > self.max_body:
                raise BadResponse(f"the server's reply exceeds {self.max_body:,} bytes")
        else:
            self.buffered += len(data)
            if self.buffered > _PAUSE_AT and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.status:  # not the end of an interim reply
            self._end()

    def _end(self) -> None:
        if self.decoder is not None:
            self.body.append(self.decoder.flush())
            self.decoder = None
        self.complete = True
        self._stop_timer()
        self._wake()
