"""The lean upstream client (backends/http1.py) against real sockets: servers that write raw HTTP/1.1 bytes.

Each server here is an asyncio server on 127.0.0.1 that answers every request with the bytes a test gives
it, so the client meets exactly the framing a real upstream could send: lengths, chunks, gzip, a close,
a stall, a reply nobody asked for.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import socket
import ssl
import struct
import time

import pytest
import trustme

from modelfleet.backends import http1

HEAD = b"Content-Type: application/json\r\n"


def aio(test):
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 20))

    return run


class RawServer:
    """Reads requests (head + Content-Length body) and runs `answer(writer, n)` for the n-th one."""

    def __init__(self, answer, ssl: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.ssl = ssl
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                if await self.answer(writer, len(self.requests)) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def reply(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def post(client: http1.Client, url: str, *, stream: bool = False, timeout: float = 5) -> http1.Response:
    return await client.post(url, b'{"a": 1}', HEAD, timeout, 2, stream)


@aio
async def test_keep_alive_reuses_one_connection_and_sends_one_well_formed_request():
    async def answer(w, n):
        w.write(reply(b'{"n": %d}' % n))

    async with RawServer(answer) as s:
        client = http1.Client()
        for n in (1, 2, 3):
            resp = await post(client, s.url)
            assert (resp.status, await resp.read()) == (200, b'{"n": %d}' % n)
            resp.release()
        await client.aclose()
    assert s.connections == 1
    first = s.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 8\r\n\r\n" in first and first.endswith(b'{"a": 1}')


@aio
async def test_chunked_stream_arrives_in_pieces_and_the_connection_is_reused_after():
    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.05)
        w.write(b"0\r\n\r\n")

    async with RawServer(answer) as s:
        client = http1.Client()
        for _ in range(2):
            resp = await post(client, s.url, stream=True)
            assert resp.headers["content-type"] == "text/event-stream"
            got = [c async for c in resp.chunks()]
            assert b"".join(got) == b"data: 1\n\ndata: 2\n\n" and len(got) == 2
            resp.release()
        await client.aclose()
    assert s.connections == 1


@aio
async def test_gzip_is_decoded_even_though_it_was_not_asked_for():
    body = b'{"choices": []}' * 50

    async def answer(w, n):
        w.write(reply(gzip.compress(body), b"Content-Encoding: gzip\r\n"))

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url)
        assert await resp.read() == body
        resp.release()
        await client.aclose()


@aio
async def test_a_reply_delimited_by_closing_the_connection_is_whole():
    async def answer(w, n):
        w.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"ok": true}')
        return False

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url)
        assert await resp.read() == b'{"ok": true}'
        resp.release()
        await client.aclose()


@aio
async def test_a_closed_idle_connection_is_not_reused():
    async def answer(w, n):
        w.write(reply(b"{}"))
        return False  # answers, then closes: as an upstream with a short keep-alive does

    async with RawServer(answer) as s:
        client = http1.Client()
        for _ in range(3):
            resp = await post(client, s.url)
            assert await resp.read() == b"{}"
            resp.release()
            await asyncio.sleep(0.05)  # the FIN arrives while the connection idles in the pool
        await client.aclose()
    assert s.connections == 3


@aio
async def test_server_that_hangs_up_mid_reply_is_a_disconnect():
    async def answer(w, n):
        w.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        return False

    async with RawServer(answer) as s:
        client = http1.Client()
        with pytest.raises(http1.Disconnected, match="closed the connection"):
            await post(client, s.url)
        await client.aclose()


@aio
async def test_refused_connection_names_host_and_port():
    async with RawServer(lambda w, n: None) as s:
        url = s.url
    client = http1.Client()
    with pytest.raises(http1.ConnectFailed, match=r"connection to 127\.0\.0\.1:\d+ failed"):
        await post(client, url)
    with pytest.raises(http1.ConnectFailed, match="not an http"):  # a replica with no address yet: no 500
        await post(client, "/chat/completions")
    await client.aclose()


@aio
async def test_json_timeout_bounds_the_whole_exchange_and_drops_the_connection():
    async def answer(w, n):
        if n == 1:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")  # then nothing more
        else:
            w.write(reply(b"{}"))

    async with RawServer(answer) as s:
        client = http1.Client()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await post(client, s.url, timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2
        resp = await post(client, s.url)  # a fresh connection: the stalled one is not reused
        assert await resp.read() == b"{}"
        resp.release()
        await client.aclose()
    assert s.connections == 2


@aio
async def test_stream_timeout_is_per_gap_not_total():
    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in all, never more than 0.1 s between chunks
            await asyncio.sleep(0.1)
            w.write(b"2\r\nok\r\n")
        await asyncio.sleep(1)  # then a gap longer than the timeout

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url, stream=True, timeout=0.4)
        got = b""
        with pytest.raises(TimeoutError):
            async for chunk in resp.chunks():
                got += chunk
        assert got == b"ok" * 6
        resp.close()
        await client.aclose()


@aio
async def test_abandoned_stream_closes_the_connection_so_the_upstream_sees_it():
    gone = asyncio.Event()

    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(100):
                w.write(b"2\r\nok\r\n")
                await w.drain()
                await asyncio.sleep(0.02)
        except ConnectionError:
            gone.set()
        return False

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url, stream=True)
        async for _ in resp.chunks():
            break
        resp.release()  # not wholly read: dropped, not pooled
        await asyncio.wait_for(gone.wait(), 3)
        await client.aclose()


@aio
async def test_cancelled_request_drops_its_connection():
    async def answer(w, n):
        if n == 1:
            await asyncio.sleep(10)
        w.write(reply(b"{}"))

    async with RawServer(answer) as s:
        client = http1.Client()
        task = asyncio.ensure_future(post(client, s.url))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        resp = await post(client, s.url)
        assert await resp.read() == b"{}"
        resp.release()
        await client.aclose()
    assert s.connections == 2


@aio
async def test_garbage_and_unsupported_encodings_are_bad_responses():
    async def answer(w, n):
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n" if n == 1 else reply(b"x", b"Content-Encoding: br\r\n"))

    async with RawServer(answer) as s:
        client = http1.Client()
        with pytest.raises(http1.BadResponse, match="not valid HTTP"):
            await post(client, s.url)
        with pytest.raises(http1.BadResponse, match="br"):
            await post(client, s.url)
        await client.aclose()


@aio
async def test_a_slow_reader_pauses_the_socket_instead_of_buffering_without_bound():
    chunk = b"x" * 65536

    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(64):  # 4 MiB
            w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await w.drain()
        w.write(b"0\r\n\r\n")

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url, stream=True)
        await asyncio.sleep(0.5)  # the consumer dawdles
        conn = resp._conn
        assert conn.paused and conn.buffered < 4 * (1 << 20)
        total = 0
        async for c in resp.chunks():
            total += len(c)
        assert total == 64 * 65536
        resp.release()
        await client.aclose()


@aio
async def test_an_interim_reply_is_skipped_and_never_answers_the_next_request():
    async def answer(w, n):  # 100 Continue (or 103 Early Hints) first, the real reply a little later
        w.write(b"HTTP/1.1 %d Info\r\nLink: </x>\r\n\r\n" % (100 if n % 2 else 103))
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(reply(b'{"for": %d}' % n))

    async with RawServer(answer) as s:
        client = http1.Client()
        for n, stream in ((1, False), (2, False), (3, True)):
            resp = await post(client, s.url, stream=stream)
            assert (resp.status, await resp.read()) == (200, b'{"for": %d}' % n)
            assert "link" not in resp.headers
            resp.release()
        await client.aclose()
    assert s.connections == 1


@aio
async def test_a_second_reply_to_one_request_is_not_merged_into_the_first_nor_pooled():
    async def answer(w, n):
        w.write(reply(b'{"a": %d}' % n) + reply(b'{"extra": 1}', b"X-Extra: 1\r\n"))

    async with RawServer(answer) as s:
        client = http1.Client()
        for n in (1, 2):
            resp = await post(client, s.url)
            await asyncio.sleep(0.05)
            assert (await resp.read(), "x-extra" in resp.headers) == (b'{"a": %d}' % n, False)
            resp.release()
        await client.aclose()
    assert s.connections == 2  # the first connection was not trusted again


@aio
async def test_a_reply_that_ends_while_the_socket_is_paused_leaves_a_connection_that_reads():
    body = b"x" * ((1 << 20) + 500)

    async def answer(w, n):
        if n == 1:  # just below the pause mark, then its last 1000 bytes: past the mark and complete in one read
            w.write(reply(body)[:-1000])
            await w.drain()
            await asyncio.sleep(0.1)
            w.write(reply(body)[-1000:])
        else:
            w.write(reply(b"{}"))

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url, stream=True)
        while not resp.complete:
            await asyncio.sleep(0.02)
        assert resp._conn.paused
        resp.release()  # complete, though nobody took it: pooled
        resp = await post(client, s.url, timeout=1)
        assert await resp.read() == b"{}"
        resp.release()
        await client.aclose()
    assert s.connections == 1


@aio
async def test_a_stream_paused_by_its_slow_reader_does_not_time_out_the_server():
    chunk = b"x" * 65536

    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(32):
            w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        w.write(b"0\r\n\r\n")

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url, stream=True, timeout=0.3)
        await asyncio.sleep(0.8)  # the reader dawdles well past the gap bound: the server did nothing wrong
        assert sum([len(c) async for c in resp.chunks()]) == 32 * 65536
        resp.release()
        await client.aclose()


@aio
async def test_a_large_error_body_on_a_stream_is_read_whole():
    body = b"e" * (2 << 20)

    async def answer(w, n):
        w.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url, stream=True, timeout=1)
        assert (resp.status, await resp.read()) == (500, body)
        resp.release()
        await client.aclose()


@aio
async def test_a_reset_cuts_a_reply_delimited_by_the_close():
    async def answer(w, n):
        w.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"partial')
        await w.drain()
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()  # RST, not FIN
        return False

    async with RawServer(answer) as s:
        client = http1.Client()
        with pytest.raises(http1.Disconnected):
            await post(client, s.url)
        await client.aclose()


@aio
async def test_idle_connections_past_their_timeout_are_closed_even_under_steady_traffic():
    async def answer(w, n):
        await asyncio.sleep(0.05)
        w.write(reply(b"{}"))

    async def one() -> None:
        resp = await post(client, s.url)
        await resp.read()
        resp.release()

    async with RawServer(answer) as s:
        client = http1.Client(idle_timeout=0.2)
        await asyncio.gather(*(one() for _ in range(10)))  # a burst opens ten
        for _ in range(4):  # then one at a time: only the newest is ever taken
            await asyncio.sleep(0.1)
            await one()
        assert len(client._pools[("http", "127.0.0.1", int(s.url.split(":")[2].split("/")[0]))].idle) == 1
        await client.aclose()


@aio
async def test_a_stream_given_up_mid_read_never_reads_or_ends_the_next_request_on_its_connection():
    async def answer(w, n):
        if n == 1:
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"data: 1\n\n", b"data: 2\n\n"):
                w.write(b"%x\r\n%s\r\n" % (len(part), part))
                await w.drain()
                await asyncio.sleep(0.05)
            w.write(b"0\r\n\r\n")
        else:
            await asyncio.sleep(0.05)
            w.write(reply(b'{"for": 2}'))

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url, stream=True)
        chunks = resp.chunks()
        assert await anext(chunks) == b"data: 1\n\n"
        while not resp.complete:  # the relay is busy with a slow client; the upstream has finished
            await asyncio.sleep(0.02)
        resp.release()  # the drain deadline gives the stream up (end_streams)
        second = asyncio.ensure_future(post(client, s.url, timeout=1))  # takes the pooled connection
        await asyncio.sleep(0)
        with pytest.raises(http1.Disconnected):
            await anext(chunks)  # not the next request's reply
        resp.release()  # the relay's own finally: must not end the other request's exchange
        resp2 = await second
        assert await resp2.read() == b'{"for": 2}'
        resp2.release()
        await client.aclose()
    assert s.connections == 1


def test_https_upstreams_are_verified_streamed_with_backpressure_and_kept_alive(tmp_path, monkeypatch):
    ca = trustme.CA()  # a private CA, as operators run for internal upstreams
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    chunk = b"x" * 65536

    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(32):  # 2 MiB: past the pause mark
            w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await w.drain()
        w.write(b"0\r\n\r\n")

    async def main() -> None:
        served = RawServer(answer, ssl=context)
        served.server = await asyncio.start_server(served._serve, "127.0.0.1", 0, ssl=context)
        url = f"https://127.0.0.1:{served.server.sockets[0].getsockname()[1]}/v1/chat/completions"
        try:
            with pytest.raises(http1.ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await post(http1.Client(), url)  # an unknown CA is refused
            monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # as an operator trusts its CA
            client = http1.Client()
            for _ in range(2):
                resp = await post(client, url, stream=True)
                while not resp._conn.paused:  # the reader dawdles until the socket is paused
                    await asyncio.sleep(0.01)
                assert sum([len(c) async for c in resp.chunks()]) == 32 * 65536
                resp.release()
            await client.aclose()
        finally:
            await served.__aexit__()
        assert served.connections == 1  # one kept alive for both streams (the refused handshake never got here)

    asyncio.run(asyncio.wait_for(main(), 20))


@aio
async def test_a_reply_before_the_request_was_all_sent_does_not_keep_its_connection():
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # answers each head at once, never reads a body, keeps the connection
                heads.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(reply(b'{"error": "too large"}'))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    client = http1.Client()
    resp = await client.post(url, b"x" * (16 << 20), HEAD, 5, 2, False)  # more than the socket buffers hold
    resp.release()
    resp = await post(client, url)
    assert await resp.read() == b'{"error": "too large"}'
    resp.release()
    await client.aclose()
    server.close()
    await server.wait_closed()
    assert [h.split(b" ")[0] for h in heads] == [b"POST", b"POST"]  # never the rest of a body as a head
