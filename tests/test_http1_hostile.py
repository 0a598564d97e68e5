"""The lean upstream client (backends/http1.py) against hostile upstreams: no reply may make the gateway hold
unbounded memory, block its loop, or hand one request's bytes to another. Raw asyncio servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest
from test_http1 import RawServer, aio, post, reply

from modelfleet.api.sse import MAX_EVENT, EventTooLarge, SSEDecoder
from modelfleet.backends import http1


@aio
async def test_a_body_longer_than_its_content_length_is_refused_not_taken_for_the_next_reply():
    async def answer(w, n):
        # One write: the reply, then a second one nobody asked for (the tail of a miscounted body).
        w.write(reply(b'{"n": %d}' % n) + reply(b'{"secret": "someone else\'s"}') if n == 1 else reply(b'{"n": 2}'))

    async with RawServer(answer) as s:
        client = http1.Client()
        resp = await post(client, s.url)
        assert await resp.read() == b'{"n": 1}'  # the reply itself is whole ...
        resp.release()
        resp = await post(client, s.url)  # ... but its connection is not reused: the tail never reaches this one
        assert await resp.read() == b'{"n": 2}'
        resp.release()
        assert s.connections == 2
        await client.aclose()


@aio
async def test_interim_replies_are_skipped():
    async def answer(w, n):
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(reply(b'{"n": %d}' % n))

    async with RawServer(answer) as s:
        client = http1.Client()
        for n, stream in ((1, False), (2, True)):
            resp = await post(client, s.url, stream=stream)
            assert (resp.status, await resp.read()) == (200, b'{"n": %d}' % n)
            assert "link" not in resp.headers
            resp.release()
        assert s.connections == 1
        await client.aclose()


@aio
async def test_endless_headers_are_cut_off_at_64_kib():
    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):  # 1.5 MB of headers, or one header line that never ends
            w.write(b"X-%d: %s\r\n" % (i, b"v" * 8) if n == 1 else b"a" * 16)
            if i % 1000 == 0:
                await w.drain()
        return False

    async with RawServer(answer) as s:
        client = http1.Client()
        for _ in range(2):
            with pytest.raises(http1.BadResponse, match="exceed 64 KiB"):
                await post(client, s.url)
        await client.aclose()


@aio
async def test_endless_trailers_end_a_stream_instead_of_holding_it_forever():
    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: ")
        for _ in range(1024):  # bytes keep coming, so no gap timer ever fires
            w.write(b"a" * 65536)
            await w.drain()

    async with RawServer(answer) as s:
        client = http1.Client()
        for stream in (True, False):
            got = b""
            with pytest.raises(http1.BadResponse, match="trailers"):
                resp = await post(client, s.url, stream=stream)
                async for c in resp.chunks():
                    got += c
            assert got in (b"hello", b"")
        await client.aclose()


@aio
async def test_a_json_reply_over_max_body_is_refused_before_it_is_all_held():
    async def answer(w, n):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 << 20))
        for _ in range(64):
            w.write(b" " * (1 << 20))
            await w.drain()

    async with RawServer(answer) as s:
        client = http1.Client(max_body=1 << 20)
        with pytest.raises(http1.BadResponse, match="exceeds 1,048,576 bytes"):
            await post(client, s.url)
        await client.aclose()


@aio
async def test_a_gzip_bomb_is_refused_before_it_is_inflated():
    bomb = gzip.compress(b"\0" * (http1.MAX_INFLATE * 4))  # ~64 KB that would inflate to 64 MiB

    async def answer(w, n):
        w.write(reply(bomb, b"Content-Encoding: gzip\r\n"))

    async with RawServer(answer) as s:
        client = http1.Client()
        for stream in (False, True):
            with pytest.raises(http1.BadResponse, match="expands past 16 MiB"):
                resp = await post(client, s.url, stream=stream)
                async for _ in resp.chunks():
                    pass
        await client.aclose()


@aio
async def test_invalid_gzip_is_a_bad_response():
    async def answer(w, n):
        w.write(reply(b"not gzip at all", b"Content-Encoding: gzip\r\n"))

    async with RawServer(answer) as s:
        client = http1.Client()
        with pytest.raises(http1.BadResponse, match="invalid"):
            await post(client, s.url)
        await client.aclose()


def test_an_event_that_never_ends_is_bounded_and_costs_its_length_not_its_length_squared():
    started = time.perf_counter()
    d = SSEDecoder()
    d.feed(b"data: ")
    with pytest.raises(EventTooLarge, match="16 MiB"):
        for _ in range(2 * MAX_EVENT // 65536):
            d.feed(b"a" * 65536)
    d = SSEDecoder()  # short lines, never a blank one: one event, still bounded
    with pytest.raises(EventTooLarge):
        for _ in range(2 * MAX_EVENT // 64000):
            d.feed(b"data: x\n" * 8000)
    d = SSEDecoder()  # a big event in small pieces (6.5 MB) is whole, and linear
    d.feed(b'data: {"a":"')
    for _ in range(100):
        assert d.feed(b"a" * 65536) == []
    assert d.feed(b'"}\r\n\r\ndata: [DONE]\n\n') == [b'{"a":"' + b"a" * 6553600 + b'"}', b"[DONE]"]
    # Quadratic copying of 16 MiB in 64 KiB pieces alone would take many seconds.
    assert time.perf_counter() - started < 3


def test_event_ends_are_found_across_chunk_boundaries():
    d = SSEDecoder()
    assert d.feed(b"data: a\n\ndata: b") == [b"a"]
    assert d.feed(b"c\n") == []
    assert d.feed(b"\n") == [b"bc"]
    assert d.feed(b"data: x\r\n") == []
    assert d.feed(b"\r\n") == [b"x"]
    assert d.feed(b"data: y\r") == []
    assert d.feed(b"\n\r\ndata: z\n\n") == [b"y", b"z"]
    assert d.feed(b"data: 1\n") == []
    assert d.feed(b"data: 2\n\n") == [b"1\n2"]
