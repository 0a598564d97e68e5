"""Server-sent events: split a byte stream into `data:` payloads, whatever the chunk boundaries."""

from __future__ import annotations

import orjson

DONE = b"[DONE]"


class SSEDecoder:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the data payload of every event completed by `chunk` (multi-line data joined by \\n)."""
        buf = self._buf + chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        *events, self._buf = buf.split(b"\n\n")
        out = []
        for event in events:
            data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                out.append(data[0] if len(data) == 1 else b"\n".join(data))
        return out


def event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
