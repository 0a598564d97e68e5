"""One engine replica as an OS process: spawn, wait for ready, forward its logs, stop."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sys
from pathlib import Path

from modelfleet.engine import READY_LINE
from modelfleet.errors import ModelfleetError


class EngineStartError(ModelfleetError):
    pass


class EngineProcess:
    def __init__(
        self, replica: str, *, model_path: Path, model_name: str, threads: int, context_size: int, port: int = 0
    ) -> None:
        self.replica = replica
        self.argv = [
            sys.executable, "-m", "modelfleet.engine",
            "--model", str(model_path), "--name", model_name,
            "--threads", str(threads), "--context-size", str(context_size),
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        self.log = logging.getLogger(f"modelfleet.engine.{replica}")
        self.port = port  # 0 until the engine reports the port it bound
        self.proc: asyncio.subprocess.Process | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self, timeout: float) -> str:
        """Start the process and return its base URL once the model is loaded and the port is open."""
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}
        # Passive OpenMP waits: busy-waiting threads starve the gateway sharing these cores.
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the gateway, which stops us in order
        )
        self._tail.clear()
        self._stderr_task = asyncio.create_task(self._forward_stderr())
        try:
            port = await asyncio.wait_for(self._read_port(), timeout)
        except TimeoutError:
            await self.stop()
            raise EngineStartError(f"engine did not become ready within {timeout:g}s{self._last_words()}") from None
        if port is None:
            code = await self.proc.wait()
            if self._stderr_task:
                await self._stderr_task
            raise EngineStartError(f"engine exited with code {code} while starting{self._last_words()}")
        self.port = port
        return f"http://127.0.0.1:{port}/v1"

    async def _read_port(self) -> int | None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(READY_LINE):
                return int(line.rsplit("=", 1)[1])
        return None

    async def _forward_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._tail.append(line)
                self.log.info("%s", line)

    def _last_words(self) -> str:
        return (": " + " | ".join(list(self._tail)[-5:])) if self._tail else ""

    async def wait(self) -> int:
        assert self.proc
        return await self.proc.wait()

    async def stop(self, grace: float = 5.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._stderr_task:
            self._stderr_task.cancel()
