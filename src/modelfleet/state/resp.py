"""A pipelining Redis connection for the hot path: each command is written the moment it is made, and
replies are matched to callers in order. hiredis (the Redis project's C parser) packs and parses.

A general client (redis-py) costs ~260 us of CPU per command here, and a batch that waits for the
previous one costs a round trip more. Here a round trip is shared by every command in flight, and
the commands of one loop tick leave in one write (one syscall). One watchdog, not a timer per
command, fails the connection when its oldest command has waited `_TIMEOUT`. Reconnects lazily;
every caller in flight when the connection drops gets a ConnectionError. A new connection runs its
`on_connect` commands and `prepare` hook before any caller may use it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis

_TIMEOUT = 2.0


Send = Callable[[tuple[Any, ...]], "asyncio.Future[Any]"]  # writes one command; its future gets the reply


class RedisError(Exception):
    """An error reply, or no reply in time."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.sent: deque[float] = deque()  # when each waiting command was written
        self.transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []  # commands of this loop tick, written together (one syscall)
        self.lost: str | None = None  # why the connection is gone, once it is

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._watch()

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sent and loop.time() - self.sent[0] > _TIMEOUT and self.transport is not None:
            self.transport.abort()  # connection_lost fails every waiting caller
            return
        self._watchdog = loop.call_later(_TIMEOUT / 4, self._watch)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.lost is not None:  # nothing would ever answer: a caller that got this connection just as it went
            fut.set_exception(ConnectionError(self.lost))
            return fut
        self.waiting.append(fut)
        self.sent.append(loop.time())
        if not self._out:
            loop.call_soon(self.flush)
        self._out.append(hiredis.pack_command(args))
        return fut

    def flush(self) -> None:
        """Write the commands made so far in one write; at the tick's end, unless a caller is that end."""
        out, self._out = self._out, []
        if out and self.transport is not None:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:
                # A reply to no command: Redis refusing a client it accepted ("max number of clients
                # reached") before it closes. The connection is of no use; its end tells every caller.
                if self.transport is not None:
                    self.transport.abort()
                return
            fut = self.waiting.popleft()
            self.sent.popleft()
            if fut.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(RedisError(str(reply)))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lost = f"the connection to Redis was lost: {exc or 'closed'}"
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.sent.clear()
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(self.lost))


class RedisConnection:
    def __init__(
        self,
        url: str,
        on_connect: tuple[tuple[Any, ...], ...] = (),
        prepare: Callable[[Send], Awaitable[None]] | None = None,
    ) -> None:
        u = urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 6379
        self.password = unquote(u.password) if u.password else None
        self.username = unquote(u.username) if u.username else None
        self.db = int(u.path.strip("/") or 0)
        self.tls = u.scheme == "rediss"
        self.on_connect = on_connect  # commands run on every new connection, e.g. SCRIPT LOAD
        # Then this, given the new connection's send, before any caller may use it: e.g. to put back what
        # a restarted Redis lost before the first command counts from zero.
        self.prepare = prepare
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connection(self) -> _Protocol:
        if self._proto is not None and self._proto.transport is not None:
            return self._proto
        if self._connecting is None:  # one connect, shared by every caller waiting for it
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(_Protocol, self.host, self.port, ssl=self.tls or None), _TIMEOUT
        )
        try:
            if self.password:
                auth = (self.username, self.password) if self.username else (self.password,)
                await proto.send(("AUTH", *auth))
            if self.db:
                await proto.send(("SELECT", self.db))
            for command in self.on_connect:
                await proto.send(command)
            if self.prepare is not None:
                await self.prepare(proto.send)
        except BaseException:
            if proto.transport is not None:
                proto.transport.abort()  # a refused AUTH must not leave a connection behind per retry
            raise
        self._proto = proto  # only now: a command written sooner would reach another database, or none
        return proto

    async def call(self, *args: Any) -> Any:
        proto = self._proto
        if proto is None or proto.transport is None:
            proto = await self._connection()
        return await proto.send(args)

    def send_nowait(self, *args: Any) -> asyncio.Future[Any] | None:
        """Write a command whose reply nobody waits for; None when not connected."""
        proto = self._proto
        if proto is None or proto.transport is None:
            return None
        return proto.send(args)

    def flush(self) -> None:
        """Write the commands made so far now: for a caller that runs at the end of a tick itself, so that
        its commands need not wait one more tick."""
        if self._proto is not None:
            self._proto.flush()

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
