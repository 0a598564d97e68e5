"""The composition root: one fleet file in, a running gateway and control plane out.

Nothing else in modelfleet builds objects from the fleet; everything else is handed what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from modelfleet.api.app import create_app
from modelfleet.api.proxy import Proxy, RouteEntry, Target
from modelfleet.backends.openai_http import OpenAIHTTPBackend
from modelfleet.config import Fleet, LlamaCppDeployment, OpenAIDeployment
from modelfleet.control.plane import ControlPlane
from modelfleet.engine.model import check_engine_installed
from modelfleet.observability.access_log import AccessLog
from modelfleet.observability.metrics import GatewayMetrics
from modelfleet.routing.dispatch import Dispatcher
from modelfleet.routing.routes import WeightedChoice

log = logging.getLogger("modelfleet")


class Gateway:
    def __init__(self, fleet: Fleet) -> None:
        if any(isinstance(d, LlamaCppDeployment) for d in fleet.deployments.values()):
            check_engine_installed()
        self.fleet = fleet
        self.metrics = GatewayMetrics()
        self.control = ControlPlane(fleet, on_change=self._replica_changed)
        self.dispatchers: dict[str, Dispatcher] = {}
        targets: dict[str, Target] = {}
        for name, dep in fleet.deployments.items():
            self.dispatchers[name] = Dispatcher(
                name,
                self.control.replicas[name],
                max_concurrency=dep.max_concurrency,
                max_queue=dep.max_queue,
            )
            upstream_model = (dep.model or name) if isinstance(dep, OpenAIDeployment) else name
            api_key = dep.api_key if isinstance(dep, OpenAIDeployment) else None
            targets[name] = Target(
                name=name,
                kind=dep.kind,
                upstream_model=upstream_model,
                dispatcher=self.dispatchers[name],
                backend=OpenAIHTTPBackend(api_key),
                supports_embeddings=dep.supports_embeddings,
            )
        routes = {
            name: RouteEntry(name, route.timeout, WeightedChoice(route.deployments))
            for name, route in fleet.routes.items()
        }
        self.access_log = AccessLog(fleet.server.log_format) if fleet.server.access_log else None
        self.proxy = Proxy(
            routes,
            targets,
            self.metrics,
            max_body_bytes=fleet.server.max_body_bytes,
            access_log=self.access_log,
        )
        self.metrics.watch_replicas(
            lambda: [r for reps in self.control.replicas.values() for r in reps],
            lambda d: self.dispatchers[d].queued,
        )
        created = int(time.time())
        models = [{"id": n, "object": "model", "created": created, "owned_by": "modelfleet"} for n in routes]
        self.app = create_app(
            self.proxy, metrics=self.metrics, readiness=self.readiness, models=models, cors=fleet.server.cors
        )
        self.app.cleanup_ctx.append(self._lifecycle)

    def _replica_changed(self, deployment: str) -> None:
        dispatcher = self.dispatchers[deployment]
        dispatcher.wake()
        dispatcher.fail_waiters()

    async def _lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        if self.access_log:
            self.access_log.start()
        await self.control.start(wait=False)
        yield
        # aiohttp has already drained in-flight requests when cleanup runs.
        await self.control.stop()
        if self.access_log:
            await self.access_log.stop()
        for target in self.proxy.targets.values():
            await target.backend.aclose()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        routes = {}
        for name, route in self.fleet.routes.items():
            live = [d for d, w in route.deployments.items() if w > 0]
            routes[name] = any(r.ready for d in live for r in self.control.replicas[d])
        return all(routes.values()), {"routes": routes, "not_ready": self.control.not_ready()}


async def serve(
    fleet: Fleet,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Listen, start the fleet, serve until SIGTERM/SIGINT, then drain and stop everything."""
    gateway = Gateway(fleet)
    server = fleet.server
    runner = web.AppRunner(
        gateway.app, handler_cancellation=True, access_log=None, shutdown_timeout=server.drain_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, server.host, server.port, backlog=1024)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    url = f"http://{host}:{port}"
    log.info("listening on %s; starting %d deployment(s)", url, len(fleet.deployments))

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(_wait_until_ready(gateway))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if waiter.done():
        log.info("ready: OpenAI-compatible API at %s/v1 (routes: %s)", url, ", ".join(fleet.routes))
        if on_ready:
            on_ready(url)
    await stopper
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    log.info("shutting down: draining in-flight requests (up to %gs)", server.drain_timeout)
    await runner.cleanup()
    log.info("stopped")


async def _wait_until_ready(gateway: Gateway) -> None:
    while not gateway.readiness()[0]:
        await asyncio.sleep(0.05)
