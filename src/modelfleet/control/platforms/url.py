"""openai deployments: servers someone else runs. modelfleet checks them but cannot start or stop them."""

from __future__ import annotations

from modelfleet.control.platforms.base import NotManaged


class ExternalServer:
    managed = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        raise NotManaged(f"deployment {self.name!r} is a server given by URL; start it where it runs")

    async def stop(self) -> None:
        raise NotManaged(f"deployment {self.name!r} is a server given by URL; stop it where it runs")

    async def watch(self) -> None:
        return None  # health checks watch it

    async def shutdown(self) -> None:
        return None
