"""One stream's events on their way from a deployment to the client: the model renamed to the route's,
usage and errors read, time to first token and generated events counted, [DONE] noticed.

Most events are compact deltas whose one change is the model's name. A read of them is checked and
renamed as bytes in a few C-level scans (`_compact_run`), never parsed and re-encoded. Everything that
decides something is parsed: the first event (to learn the upstream's model name), events that carry
usage, an error or a finish_reason, and any event the byte checks do not vouch for (a comment, an
`event:` line, data over several lines, a raw \\r, a \\u escape that could spell a member's name).
Quotes inside JSON strings are escaped and raw newlines never occur in them, so the byte needles below
only ever match members and lines. What the byte path cannot vouch for is that a `{...}` payload is
valid JSON inside: such an event goes to the client as the deployment wrote it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from modelfleet.api.sse import DONE, DONE_EVENT, payloads
from modelfleet.errors import UpstreamError
from modelfleet.observability.logging import redact
from modelfleet.values import Usage

# Members that decide something (parsed, never taken on bytes): a finish_reason that is not null is a string.
_CUT_AT = (b'"usage"', b'"error"', b'"finish_reason":"')
# Also never on bytes: a raw \r (a line end to SSE clients, whitespace to JSON), \u escapes (which can
# spell a member's name, e.g. "\u0075sage") and names that end with a member's ("\"model" is not model).
_PARSED = (*_CUT_AT, b"\r", b"\\u", b'\\"model"', b'\\"choices"', b'\\"finish_reason"')

if TYPE_CHECKING:
    from modelfleet.api.proxy import _Exchange


class StreamEvents:
    __slots__ = ("deployment", "done", "ex", "finished", "model", "out", "replica", "ttft")

    def __init__(self, ex: _Exchange, deployment: str, replica: str) -> None:
        self.ex = ex
        self.deployment, self.replica = deployment, replica  # named in error messages
        self.model: tuple[bytes, bytes] | None = None  # the upstream's "model" member, and the route's
        self.out: list[bytes] = []  # events to relay
        self.ttft: float | None = None
        self.done = False  # [DONE] came
        self.finished = False  # a choice came with a finish_reason (only parsed events decide it)

    def take(self, run: bytes) -> None:
        """Every event in `run` (complete events, SSEDecoder.complete), relayed to `out` or acted on;
        nothing after [DONE]."""
        head, middle, tail = _pieces(run, self.model is None)
        for data in payloads(head):
            self._event(data)
        if middle and not (self.model is not None and self.ex.output is None and self._compact(middle)):
            for data in payloads(middle):
                self._event(data)
        for data in payloads(tail):
            self._event(data)

    def flush(self) -> bytes:
        """What is ready to relay (b"" if nothing)."""
        out, self.out = self.out, []
        return b"".join(out)

    @property
    def where(self) -> str:
        return f"deployment {self.deployment!r} replica {self.replica}"

    def whole(self) -> bool:
        """Complete, even without [DONE]: it finished, and usage came if the client asked for it."""
        return self.done or (self.finished and (self.ex.usage is not None or not self.ex.client_wants_usage))

    def _generated(self, n: int) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.ex.started
        self.ex.generated += n

    def _compact(self, middle: bytes) -> bool:
        """A run of compact deltas (and maybe [DONE]) renamed as bytes; False if it is not one."""
        assert self.model is not None
        ends = middle.endswith(DONE_EVENT)
        body = middle[: -len(DONE_EVENT)] if ends else middle
        if self.done:
            return True  # nothing after [DONE] is relayed
        n = _compact_run(body, self.model[0]) if body else 0
        if body and not n:
            return False
        if n:
            self._generated(n)
            self.out.append(body.replace(self.model[0], self.model[1]))
        self.done = self.done or ends
        return True

    def _event(self, data: bytes) -> None:
        if self.done:
            return  # nothing after [DONE] is relayed
        if data == DONE:
            self.done = True
            return
        ex, model = self.ex, self.model
        if (
            model is not None
            and data.startswith(b"{")
            and data.endswith(b"}")
            and b"\n" not in data  # data over several lines goes back as one line: parsed
            and _vouched(data, model[0], 1)
        ):  # one compact delta among other events, renamed as bytes
            self._generated(1)
            if ex.output is not None:
                ex.output.append(data)
            self.out.append(b"data: " + data.replace(model[0], model[1]) + b"\n\n")
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.where} sent a malformed event") from None
        if not isinstance(obj, dict):
            return
        if "error" in obj:  # the upstream's own terminal error event
            raise _stream_error(self.where, obj["error"])
        if model is None and isinstance(obj.get("model"), str):
            self.model = (b'"model":' + orjson.dumps(obj["model"]), b'"model":' + orjson.dumps(ex.route.name))
        obj["model"] = ex.route.name
        choices = obj.get("choices")
        if choices and isinstance(choices, list):
            self._generated(1)
            self.finished = self.finished or any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
        u = obj.get("usage")
        if isinstance(u, dict) and u:
            ex.usage = Usage.reported(u)
        if ex.output is not None:
            ex.output.append(data)
        if not ex.client_wants_usage:
            if u and not choices:
                return  # the usage-only chunk we asked for ourselves
            obj.pop("usage", None)
        try:
            self.out.append(b"data: " + orjson.dumps(obj) + b"\n\n")
        except TypeError:  # nesting orjson parsed but will not encode (over 255 levels)
            raise UpstreamError(f"{self.where} sent an event nested too deeply") from None


def _pieces(run: bytes, first_alone: bool) -> tuple[bytes, bytes, bytes]:
    """`run` cut in three where the byte path's conditions change: the first event, while the upstream's
    model is unknown (parsed to learn it); the compact deltas that may follow; from the first event that
    carries usage, an error or a finish_reason on (parsed for them)."""
    start = run.find(b"\n\n") + 2 if first_alone else 0
    found = [i for i in (run.find(needle, start) for needle in _CUT_AT) if i >= 0]
    cut = len(run)
    if found:
        sep = run.rfind(b"\n\n", start, min(found))
        cut = sep + 2 if sep >= 0 else start
    return run[:start], run[start:cut], run[cut:]


def _compact_run(run: bytes, model: bytes) -> int:
    """How many events are in `run` (cut by _pieces before any usage, error or finish_reason) if each is
    one `data: {...}` line that `_vouched` lets through; else 0."""
    n = run.count(b"\n\n")
    if (
        run.count(b"\n") != 2 * n  # every event one line: no comment, event:, id: or multi-line data
        or not run.startswith(b"data: {")
        or run.count(b"}\n\ndata: {") != n - 1  # and each of them a data line holding one object
        or not run.endswith(b"}\n\n")
        or not _vouched(run, model, n)
    ):
        return 0
    return n


def _vouched(events: bytes, model: bytes, n: int) -> bool:
    """The bytes of `n` events hold, as counted, one `model` member each (the upstream's compact
    `"model":"..."`), one non-empty `choices` list each, no finish_reason but null, and nothing that
    must be parsed. Every `"model"` must be one of those members, so counts that balance across events
    (one with a nested copy, one without) leave an event with no model member, never the upstream's."""
    return (
        events.count(model) == n
        and events.count(b'"model"') == n
        and events.count(b'"choices":[{') == n
        and events.count(b'"choices"') == n
        and events.count(b'"finish_reason"') == events.count(b'"finish_reason":null')
        and not any(needle in events for needle in _PARSED)
    )


def _stream_error(where: str, err: object) -> UpstreamError:
    message = err.get("message", err) if isinstance(err, dict) else err
    return UpstreamError(f"{where} failed mid-stream: {redact(str(message))}", code="upstream_stream_error")
