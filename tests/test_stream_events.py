"""The byte path for stream events relays exactly what the event-by-event parse would, for any events
and any way the reads split them."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfleet.api.sse import SSEDecoder, payloads
from modelfleet.api.stream_events import StreamEvents
from modelfleet.errors import UpstreamError

TRICKY = ['"model":"up"', "[DONE]", "data: x", "\n\n", '"usage"', '"choices":[{', "é", '"finish_reason":"stop"', ""]


def _exchange(parse_all: bool, wants_usage: bool) -> SimpleNamespace:
    # `output` set is what makes a route keep the answer's text; it also turns the byte path off.
    return SimpleNamespace(started=time.perf_counter(), generated=0, output=[] if parse_all else None,
                           usage=None, client_wants_usage=wants_usage,
                           route=SimpleNamespace(name="route"))  # fmt: skip


def _relay(raw: bytes, cuts: list[int], parse_all: bool, wants_usage: bool) -> tuple[bytes, int, bool, bool, object]:
    ex = _exchange(parse_all, wants_usage)
    events = StreamEvents(ex, "d", "r")  # type: ignore[arg-type]
    decoder = SSEDecoder()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        run = decoder.complete(raw[a:b])
        if run:
            events.take(run)
            out.append(events.flush())
    return b"".join(out), ex.generated, events.done, events.finished, ex.usage


def _event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _oracle(raw: bytes, wants_usage: bool) -> tuple[list, int, bool, bool]:
    """What the client should get, by parsing every event: the reference the byte paths are held to."""
    out, generated, done, finished = [], 0, False, False
    for data in SSEDecoder().feed(raw):
        if data == b"[DONE]":
            done = True
            continue
        obj = orjson.loads(data)
        obj["model"] = "route"
        if choices := obj.get("choices"):
            generated += 1
            finished = finished or any(c.get("finish_reason") for c in choices)
        if not wants_usage:
            if obj.get("usage") and not choices:
                continue
            obj.pop("usage", None)
        out.append(obj)
    return out, generated, done, finished


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up"}
    raw = [_event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})]
    texts = draw(st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=8)), max_size=12))
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        raw.append(_event({**chunk, "choices": [{"index": 0, "delta": {"content": text},
                                                 "finish_reason": "stop" if last else None}]}))  # fmt: skip
        odd = draw(st.integers(0, 14))  # odd events: parsed, never renamed as bytes
        if odd == 0:
            raw.append(_event({**chunk, "choices": []}))
        elif odd == 1:
            raw.append(b": keep-alive\n\n")
        elif odd == 2:
            raw.append(_event({**chunk, "model": "other", "choices": [{"index": 0, "delta": {}}]}))
        elif odd == 3:
            raw.append(_event({k: v for k, v in chunk.items() if k != "model"} | {"choices": [{"delta": {}}]}))
        elif odd == 4:
            raw.append(b"id: 7\n" + _event({**chunk, "choices": [{"index": 0, "delta": {}}]}))
        elif odd == 5:
            raw.append(b"data:" + _event({**chunk, "choices": [{"index": 0, "delta": {}}]})[6:])
        elif odd == 6:
            raw.append(b"event: delta\nretry: 1\n" + _event({**chunk, "choices": [{"index": 0, "delta": {}}]}))
        elif odd == 7:  # one JSON document over two data lines
            doc = orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": "x"}}]})
            raw.append(b"data: " + doc[:20] + b"\ndata: " + doc[20:] + b"\n\n")
        elif odd == 8:  # two choices, only the second finished
            raw.append(
                _event(
                    {**chunk, "choices": [{"index": 0, "finish_reason": None}, {"index": 1, "finish_reason": "length"}]}
                )
            )
    if draw(st.booleans()):
        raw.append(_event({**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(texts)}}))
    if draw(st.booleans()):
        raw.append(b"data: [DONE]\n\n")
    data = b"".join(raw)
    if draw(st.booleans()):
        data = data.replace(b"\n", b"\r\n")
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    return data, cuts


@settings(max_examples=300, deadline=None)
@given(stream=streams(), wants_usage=st.booleans())
def test_the_byte_path_relays_what_the_full_parse_would(stream: tuple[bytes, list[int]], wants_usage: bool) -> None:
    raw, cuts = stream
    fast = _relay(raw, cuts, parse_all=False, wants_usage=wants_usage)
    slow = _relay(raw, cuts, parse_all=True, wants_usage=wants_usage)
    assert fast[1:] == slow[1:]
    relayed = [orjson.loads(p) for p in payloads(fast[0])]
    assert (relayed, *fast[1:4]) == _oracle(raw, wants_usage)
    assert [orjson.loads(p) for p in payloads(fast[0])] == [orjson.loads(p) for p in payloads(slow[0])]
    for p in payloads(fast[0]):  # every relayed event is valid JSON that names the route, not the upstream
        assert orjson.loads(p)["model"] == "route"
    # Only the upstream's data reaches the client: no event:, retry:, id: or comment lines of its own.
    assert all(line.startswith(b"data: ") for line in fast[0].split(b"\n") if line)


def test_a_read_of_compact_deltas_is_renamed_as_one_run_of_bytes() -> None:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "up"}
    first = _event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    deltas = b"".join(_event({**chunk, "choices": [{"index": 0, "delta": {"content": f"t{i}"}}]}) for i in range(5))
    out, generated, done, _, _ = _relay(first + deltas + b"data: [DONE]\n\n", [], parse_all=False, wants_usage=False)
    assert out == _event({**chunk, "model": "route", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + (
        deltas.replace(b'"model":"up"', b'"model":"route"')
    )
    assert (generated, done) == (6, True)


def test_an_error_event_after_deltas_is_still_raised() -> None:
    chunk = {"model": "up", "choices": [{"index": 0, "delta": {"content": "x"}}]}
    raw = _event(chunk) + _event(chunk) + _event({"error": {"message": "engine died"}})
    with pytest.raises(UpstreamError, match="engine died"):
        _relay(raw, [], parse_all=False, wants_usage=False)


# What a hostile or broken deployment tried, in one read after the first event: each must come out as a
# parse of every event would have it.
ROLE = _event({"model": "up", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
DELTA = b'{"model":"up","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}'


@pytest.mark.parametrize(
    "hostile",
    [
        # a second model member, spaced, beside the compact one; and counts that balance across events
        b'data: {"model":"up","model" : "SECRET","choices":[{"delta":{}}]}\n\n',
        b'data: {"model":"up","choices":[{"delta":{}}],"meta":{"model":"up"}}\n\n'
        b'data: {"model" : "SECRET","choices":[{"delta":{}}]}\n\n',
        # members spelled with \u escapes, which JSON clients decode
        b'data: {"model":"up","choices":[{"delta":{}}],"\\u0075sage":{"prompt_tokens":5,"completion_tokens":9}}\n\n',
        b'data: {"model":"up","choices":[{"delta":{}}],"mod\\u0065l":"SECRET"}\n\n',
        # a raw \r: whitespace to JSON, a line end to SSE clients
        b'data: {"model":"up",\r"choices":[{"delta":{}}]}\n\n',
    ],
)
def test_hostile_events_are_relayed_as_a_parse_would(hostile: bytes) -> None:
    raw = ROLE + b"data: " + DELTA + b"\n\n" + hostile + b"data: " + DELTA + b"\n\ndata: [DONE]\n\n"
    out, generated, done, _, usage = _relay(raw, [], parse_all=False, wants_usage=False)
    assert b"SECRET" not in out and b"\r" not in out and b"sage" not in out
    assert [orjson.loads(p) for p in payloads(out)] == _oracle(raw, wants_usage=False)[0]
    assert done and generated == _oracle(raw, wants_usage=False)[1]
    if b"sage" in hostile:
        assert usage is not None and usage.completion_tokens == 9  # billed as reported, however it is spelled


def test_a_finish_reason_nested_elsewhere_does_not_make_a_cut_off_stream_whole() -> None:
    nested = b'data: {"model":"up","choices":[{"delta":{},"finish_reason":null}],"meta":{"finish_reason":"x"}}\n\n'
    ex = _exchange(parse_all=False, wants_usage=False)
    events = StreamEvents(ex, "d", "r")  # type: ignore[arg-type]
    events.take(ROLE + nested + b"data: " + DELTA + b"\n\n")  # then the upstream closes, without [DONE]
    assert not events.whole()


def test_invalid_json_is_never_relayed_as_bytes() -> None:
    for bad in (
        b'data: "model":"up","choices":[{"x\n\n',
        b'data: {"model":"up","choices":[{}]} garbage\n\n',
        # a raw \r would end the line for SSE clients: a second event smuggled inside one
        b'data: {"model":"up","choices":[{}]}\r\rdata: {"model":"SECRET","choices":[]}\n\n',
    ):
        with pytest.raises(UpstreamError, match="malformed event"):
            _relay(ROLE + bad, [], parse_all=False, wants_usage=False)


def test_nothing_after_done_is_relayed() -> None:
    raw = ROLE + b"data: " + DELTA + b"\n\ndata: [DONE]\n\n" + b"data: " + DELTA + b"\n\n"
    out, generated, done, _, _ = _relay(raw, [len(ROLE) + 5], parse_all=False, wants_usage=False)
    assert done and generated == 2 and len(payloads(out)) == 2


@pytest.mark.parametrize(
    "odd",
    [
        b'{"\\"model":"up","choices":[{"delta":{}}]}',  # a member named "model (with a quote), not model
        b'{"model":"up","choices" :[{"delta":{}}]}',  # spaced: still one generated event
        b'{"model":"up","choices":[{}],"x":{"choices":[]}}',
        b'{"model":"up","choices":[ ]}',  # spaced and empty: none generated
        b'{"model":"up","choices":null,"x":{"choices":[1]}}',
        b'{"model":"up","choices":[{}],"choices":[]}',  # duplicate members: the last one counts
        b'{"model":"up","choices":[{"delta":{},"finish_reason": "stop"}]}',  # spaced: still finished
        b'{"model":"up","choices":[{"delta":{},"finish_reason":1}]}',
    ],
)
def test_odd_but_valid_events_are_counted_and_judged_as_a_parse_would(odd: bytes) -> None:
    for raw in (
        ROLE + b"data: " + odd + b"\n\n",  # alone after the first event
        ROLE + b"data: " + DELTA + b"\n\ndata: " + odd + b"\n\ndata: " + DELTA + b"\n\n",  # inside a run
    ):
        out, generated, done, finished, _ = _relay(raw, [], parse_all=False, wants_usage=False)
        assert ([orjson.loads(p) for p in payloads(out)], generated, done, finished) == _oracle(raw, False)
