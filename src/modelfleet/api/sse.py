"""Server-sent events: split a byte stream into `data:` payloads, whatever the chunk boundaries."""

from __future__ import annotations

import orjson

DONE = b"[DONE]"
MAX_EVENT = 16 * 1024 * 1024  # the most one event may hold unfinished: no upstream grows it without bound
# A shorter unfinished event is simply joined to the next read (cheapest when small); a longer one is
# appended in place, so an event in many tiny reads costs its length, not its length times its reads.
_JOIN_BELOW = 8 * 1024


class EventTooLarge(ValueError):
    """An event went on past MAX_EVENT bytes without ending."""


class SSEDecoder:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the data payload of every event completed by `chunk` (multi-line data joined by \\n)."""
        return payloads(self.complete(chunk))

    def complete(self, chunk: bytes) -> bytes:
        """The events `chunk` completes, as one run of bytes ending in a blank line (b"" if none); line
        ends are \\n. What follows the last complete event waits for the next chunk."""
        rest = self._buf
        if not rest:
            buf: bytes = chunk
        elif len(rest) < _JOIN_BELOW:  # the usual case: an event split across two reads
            buf = rest + chunk  # type: ignore[assignment]  # bytes: only a long event is a bytearray
        else:
            # A long unfinished event: appended in place and searched only where an end could now be, so an
            # event that arrives in many pieces costs its length, not its length times its pieces.
            if not isinstance(rest, bytearray):
                rest = self._buf = bytearray(rest)
            seen = len(rest)
            rest += chunk
            if rest.find(b"\n\n", seen - 1) < 0 and rest.find(b"\n\r\n", max(0, seen - 2)) < 0:
                if len(rest) > MAX_EVENT:
                    self._buf = b""
                    raise EventTooLarge(f"an event that ran past {MAX_EVENT >> 20} MiB without ending")
                return b""
            buf = bytes(rest)
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n") + 2
        self._buf = buf[end:] if end > 1 else buf
        if len(self._buf) > MAX_EVENT:
            self._buf = b""
            raise EventTooLarge(f"an event that ran past {MAX_EVENT >> 20} MiB without ending")
        return buf[:end] if end > 1 else b""


def payloads(run: bytes) -> list[bytes]:
    """The data payload of each event in a run of complete events (SSEDecoder.complete)."""
    out = []
    for ev in run[:-2].split(b"\n\n") if run else ():
        data = [line[5:].lstrip(b" ") for line in ev.split(b"\n") if line.startswith(b"data:")]
        if data:
            out.append(data[0] if len(data) == 1 else b"\n".join(data))
    return out


def event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
