"""The seam between the control plane's decisions and a place deployments run."""

from __future__ import annotations

from typing import Protocol


class NotManaged(Exception):
    """The deployment runs somewhere modelfleet cannot start or stop (a server given by URL)."""


class Platform(Protocol):
    managed: bool  # can modelfleet start and stop it?

    async def start(self) -> None:
        """Begin bringing the deployment up; its replicas turn starting, then ready. Idempotent."""

    async def stop(self) -> None:
        """Take the deployment down; its replicas turn stopped. Idempotent."""

    async def watch(self) -> None:
        """Only observe it (an extra gateway worker, which leaves decisions to the primary)."""

    async def shutdown(self) -> None:
        """The gateway is exiting: release what it holds. Engines stop; remote endpoints stay as they are."""
