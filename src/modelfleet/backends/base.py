"""The seam between the gateway and a wire protocol: two calls and a close.

(Health checks are the control plane's: an HTTP backend also answers `probe`, see control/health.py.)

A backend sends an OpenAI-shaped body to one replica and gives back either the whole JSON reply
or the raw bytes of an SSE stream. It translates every foreign error into `modelfleet.errors`,
so nothing above this line ever sees an aiohttp (or botocore) exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from modelfleet.values import Replica


class UpstreamStream(Protocol):
    def chunks(self) -> AsyncIterator[bytes]:
        """Raw body bytes as they arrive; raises UpstreamError / UpstreamTimeout if the stream dies."""
        ...

    def close(self) -> None:
        """Drop the upstream connection (stops generation on servers that watch for disconnects)."""


class Backend(Protocol):
    async def send(self, replica: Replica, path: str, body: bytes, request_id: str, timeout: float) -> bytes:
        """POST and return the 2xx JSON body; 4xx -> UpstreamRejected, 5xx/refused -> UpstreamError."""
        ...

    async def open_stream(
        self, replica: Replica, path: str, body: bytes, request_id: str, timeout: float
    ) -> UpstreamStream:
        """POST with stream=true; returns once the upstream has answered 2xx headers."""
        ...

    async def aclose(self) -> None: ...
