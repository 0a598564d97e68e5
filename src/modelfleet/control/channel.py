"""The channel between gateway workers and the primary, which alone decides deployment lifecycles.

With `server.workers > 1` the primary listens on a Unix socket in the workers' shared folder
(owner-only permissions). A worker that finds a deployment stopped asks the primary to wake it,
and so do `deployments start|stop|status` calls that land on a worker; each worker also reports
the requests it served each second, so idle stop counts every worker's traffic.

    POST /wake/{name}            -> {"wait": seconds}    (or the Unavailable error the primary raised)
    POST /set/{name}/{verb}      -> {"desired", "reason"}
    GET  /status                 -> [deployment status]
    POST /activity/{worker}      <- {deployment: requests served}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from modelfleet.errors import APIError, Unavailable

if TYPE_CHECKING:
    from modelfleet.control.deployments import Deployments

SOCKET = "control.sock"


class ChannelServer:
    def __init__(self, deployments: Deployments, folder: Path) -> None:
        self.deployments = deployments
        self.path = folder / SOCKET
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([
            web.post("/wake/{name}", self._wake),
            web.post("/set/{name}/{verb}", self._set),
            web.get("/status", self._status),
            web.post("/activity/{worker}", self._activity),
        ])  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _wake(self, request: web.Request) -> web.Response:
        try:
            wait = await self.deployments.wake_started(request.match_info["name"])
        except APIError as exc:
            return web.json_response({"error": exc.message, "retry_after": exc.headers.get("Retry-After")}, status=503)
        return web.json_response({"wait": wait})

    async def _set(self, request: web.Request) -> web.Response:
        name, verb = request.match_info["name"], request.match_info["verb"]
        try:
            return web.json_response(await self.deployments.set(name, verb, f"{verb} by the admin API (a worker)"))
        except Exception as exc:  # the worker says what the primary could not do
            return web.json_response({"error": f"{verb} failed: {type(exc).__name__}: {exc}"}, status=503)

    async def _status(self, _: web.Request) -> web.Response:
        return web.json_response(await self.deployments.status())

    async def _activity(self, request: web.Request) -> web.Response:
        self.deployments.served_elsewhere(request.match_info["worker"], await request.json())
        return web.json_response({})


class ChannelClient:
    """The primary, as a worker's Deployments sees it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SOCKET
        self.worker = str(os.getpid())
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.path)), timeout=aiohttp.ClientTimeout(total=120)
            )
        return self._session

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            async with self._client().request(method, "http://primary" + path, data=orjson.dumps(body)) as resp:
                doc = await resp.json(loads=orjson.loads)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise Unavailable(f"this gateway worker cannot reach the primary gateway: {exc}", retry_after=2) from None
        if resp.status == 503:
            raise Unavailable(doc["error"], retry_after=float(doc.get("retry_after") or 5))
        if resp.status != 200:
            raise Unavailable(f"the primary gateway answered {resp.status}: {doc}", retry_after=2)
        return doc

    async def wake(self, name: str) -> float:
        return float((await self._call("POST", f"/wake/{name}"))["wait"])

    async def set(self, name: str, state: str, reason: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/set/{name}/{state}"))

    async def status(self) -> list[dict[str, Any]]:
        return list(await self._call("GET", "/status"))

    async def activity(self, requests: dict[str, int]) -> None:
        await self._call("POST", f"/activity/{self.worker}", requests)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
