"""Serving: listen, start the fleet, run until SIGTERM/SIGINT, then drain and stop in order.

With `server.workers: N`, the primary process owns the deployment lifecycles (schedules, wakes,
start and stop) and serves like any worker; N-1 more gateway processes share its port through
SO_REUSEPORT, watch the same deployments, and ask the primary to wake or start one (control/channel.py).
On shutdown the workers drain first, then the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson
from aiohttp import web

from modelfleet.app import Gateway
from modelfleet.background import Periodic
from modelfleet.config import Fleet
from modelfleet.config.schema import REVEAL

log = logging.getLogger("modelfleet")

METRICS_DIR_ENV = "MODELFLEET_METRICS_DIR"
_BACKSTOP = 0.5


async def serve(fleet: Fleet, *, worker: bool = False, on_ready: Callable[[str], None] | None = None) -> None:
    server = fleet.server
    many = server.workers > 1 or worker
    metrics_dir = Path(os.environ[METRICS_DIR_ENV]) if worker else None
    if many and not worker:
        metrics_dir = Path(tempfile.mkdtemp(prefix="modelfleet-metrics-"))
    gateway = Gateway(fleet, metrics_dir=metrics_dir, worker=worker)
    runner = web.AppRunner(
        gateway.app,
        handler_cancellation=True,
        access_log=None,
        # The drain (api/drain.py) has answered every request by the deadline; aiohttp's own graceful
        # wait (and then as long again for a cancelled handler) is only a short backstop after it.
        shutdown_timeout=_BACKSTOP,
        keepalive_timeout=server.header_timeout,  # aiohttp's one timer for slow headers and idle connections
    )
    await runner.setup()
    site = web.TCPSite(runner, server.host, server.port, backlog=1024, reuse_port=many or None)
    await site.start()
    host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    url = f"http://{host}:{port}"
    role = f"worker {os.getpid()}" if worker else "listening"
    log.info("%s on %s; starting %d deployment(s)", role, url, len(fleet.deployments))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    orphaned = None
    if worker:  # a worker whose primary died has no one deciding lifecycles: it drains and goes too
        parent = os.getppid()

        async def check_parent() -> None:
            if os.getppid() != parent:
                log.error("worker %d: the primary gateway is gone; stopping", os.getpid())
                stop.set()

        orphaned = Periodic("primary watch", 1.0, check_parent, logger=log)
        orphaned.start()
    ready = asyncio.create_task(_until_ready(gateway))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    workers: list[asyncio.Task[None]] = []
    # Everything made so far (modules, the fleet, the app) lives as long as the process: out of the
    # collector's sight, so a full collection under load walks only what requests made (shorter pauses).
    gc.collect()
    gc.freeze()
    if ready.done() and not worker:
        log.info("ready: OpenAI-compatible API at %s/v1 (routes: %s)", url, ", ".join(fleet.routes))
        if on_ready:
            on_ready(url)
        if many:
            spec = fleet.model_copy(update={"server": fleet.server.model_copy(update={"port": port, "workers": 1})})
            spec_path = metrics_dir / "fleet.json"  # type: ignore[operator]
            spec_path.touch(mode=0o600)  # it holds the fleet's secrets, for the workers only
            spec_path.write_bytes(orjson.dumps(spec.model_dump(mode="json", context=REVEAL)))
            workers = [
                asyncio.create_task(_run_worker(i, spec_path, metrics_dir, stop))  # type: ignore[arg-type]
                for i in range(1, server.workers)
            ]
    await stopping
    if orphaned is not None:
        await orphaned.stop()
    ready.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ready
    gateway.drain.begin()
    log.info("shutting down: draining in-flight requests (up to %gs)", server.drain_timeout)
    if workers:
        log.info("stopping %d worker(s)", len(workers))
    await site.stop()  # no new connections; the ones open are answered 503 shutting_down from now on
    # The workers drain alongside (they still reach the primary's channel: it closes in runner.cleanup).
    await asyncio.gather(gateway.drain.settle(server.drain_timeout, gateway.proxy.end_streams), *workers)
    await runner.cleanup()
    if metrics_dir is not None and not worker:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")


async def _until_ready(gateway: Gateway) -> None:
    while not gateway.readiness()[0]:
        await asyncio.sleep(0.05)


async def _run_worker(index: int, spec: Path, metrics_dir: Path, stop: asyncio.Event) -> None:
    """Keep one extra gateway process running until `stop`; then SIGTERM it and let it drain."""
    backoff = 1.0
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modelfleet", "serve", "--worker-fleet", str(spec),
            env={**os.environ, METRICS_DIR_ENV: str(metrics_dir)}, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await exited
            return
        stopping.cancel()
        log.error("gateway worker %d exited with code %s; restarting in %gs", index, proc.returncode, backoff)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 30.0)
