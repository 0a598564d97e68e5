"""Real processes on 127.0.0.1: the gateway (`modelfleet serve`), fake upstreams, the engine.

Every process a test starts is stopped when the test (or session) ends, even on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

PY = sys.executable
_STARTED: list[Proc] = []  # every process any test started, for the safety net at session end


def pytest_sessionfinish(session, exitstatus) -> None:
    """A fixture that raised before its `yield` cannot stop what it started: stop it here."""
    for p in _STARTED:
        if p.proc.poll() is None:
            p.stop(signal.SIGKILL)


class Proc:
    """A child process whose output is collected line by line on a thread (so pipes never fill)."""

    def __init__(self, argv: list[str], ready: str, *, stream: str = "stderr", timeout: float = 60, env=None):
        self.argv = argv
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stream == "stdout" else subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        _STARTED.append(self)
        pipes = [self.proc.stdout] if stream == "stdout" else [self.proc.stdout, self.proc.stderr]
        for pipe in pipes:
            threading.Thread(target=self._drain, args=(pipe,), daemon=True).start()
        self.match = self._started(ready, timeout)

    def _started(self, ready: str, timeout: float) -> re.Match[str]:
        try:
            return self.wait_for(ready, timeout)
        except BaseException:
            self.stop(signal.SIGKILL)  # a process that never came up is not left behind
            raise

    def _drain(self, pipe) -> None:
        for line in pipe:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if m := rx.search(line):
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and seen == len(self.lines)):
                    tail = "\n".join(self.lines[-30:])
                    raise AssertionError(f"{pattern!r} not seen from {self.argv[:4]}; output:\n{tail}")
                self._cond.wait(min(left, 0.2))

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Gateway(Proc):
    """`modelfleet serve` on a free port; `url` is the API base (…/v1)."""

    def __init__(self, fleet: Path | None, *, wait_ready: bool = True, timeout: float = 120, extra=(), env=None):
        argv = [PY, "-m", "modelfleet", "serve", "--port", "0", *extra]
        if fleet is not None:
            argv += ["-f", str(fleet)]
        super().__init__(argv, r"listening on (http://127\.0\.0\.1:\d+)", timeout=timeout, env=env)
        self.base = self.match.group(1)
        self.url = self.base + "/v1"
        if wait_ready:
            self._started(r"ready: OpenAI-compatible API", timeout)


class Upstream(Proc):
    """The fake OpenAI server (modelfleet.testing.fake_upstream) with injected behaviour."""

    def __init__(self, *flags: str):
        argv = [PY, "-m", "modelfleet.testing.fake_upstream", "--port", "0", *flags]
        super().__init__(argv, r"FAKE_UPSTREAM_READY port=(\d+)", stream="stdout")
        self.port = int(self.match.group(1))
        self.url = f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Collects what a test starts, and stops it all afterwards."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def start(procs):
    def _start(cls, *args, **kw):
        p = cls(*args, **kw)
        procs.append(p)
        return p

    return _start


def eventually(check, timeout: float = 10, what: str = ""):
    """Poll `check()` until it returns something truthy (its value is returned); fail after `timeout`.

    Tests wait on conditions, never on a guessed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what or getattr(check, '__name__', check)}")
        time.sleep(0.05)


def write_fleet(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def proxy_fleet(tmp_path: Path, urls: dict[str, str], server: str = "", extra: str = "", routes: str = "") -> Path:
    """A fleet of one openai deployment per upstream URL, each behind a route of its name; access log on.
    `server` adds to the server map (", write_timeout: 1s"), `extra` adds top-level sections."""
    deps = "\n".join(f'  {n}: {{kind: openai, urls: ["{u}"]}}' for n, u in urls.items())
    rts = routes or "\n".join(f"  {n}: {{deployments: [{n}]}}" for n in urls)
    return write_fleet(tmp_path, f"""\
server: {{access_log: true{server}}}
state: {{store: "sqlite:///{tmp_path}/mf.db", flush_interval: 200ms}}
{extra}
deployments:
{deps}
routes:
{rts}
""")  # fmt: skip


def chat_body(model: str = "chat", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Hello"}], **extra}


METRICS_KEY = "metrics-key-0123456789abcdef"  # auth.metrics_key in the fleets that have teams


def scrape(base: str) -> str:
    """A gateway's /metrics, read as Prometheus would (with teams, it needs auth.metrics_key)."""
    return httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}).text


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def bench_run(tmp_path, url: str, model: str, *args: str) -> dict:
    ps_dir = tmp_path / "ps"
    if not ps_dir.exists():
        made = subprocess.run([PY, "-m", "modelfleet", "promptset", "generate", "--packs", "general-qa", "-n", "10",
                              "-o", str(ps_dir)], capture_output=True, text=True)  # fmt: skip
        assert made.returncode == 0, made.stderr
    out = tmp_path / "run.json"
    done = subprocess.run(
        [PY, "-m", "modelfleet", "bench", "run", "--url", url, "--model", model, "--promptset", str(ps_dir),
         "-o", str(out), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing(what: str) -> None:
    """Skip on a developer's machine; fail in CI, where .ci/run installs every server."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must run these tests)")
    pytest.skip(what)


def _binary(name: str, *dirs: str) -> str | None:
    import shutil

    for d in dirs:
        if (Path(d) / name).exists():
            return str(Path(d) / name)
    return shutil.which(name)


class RedisServer:
    """A real redis-server on a free port, no persistence."""

    def __init__(self) -> None:
        exe = _binary("redis-server")
        if exe is None:
            _missing("redis-server is not installed (.ci/run installs it: apt-get install redis-server)")
        self.exe = exe
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class PostgresServer:
    """A real PostgreSQL cluster in a temporary folder, on a free port (run as `postgres` when we are root)."""

    def __init__(self) -> None:
        import tempfile

        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        dirs = [str(bindir[-1])] if bindir else []
        self.initdb, self.pg_ctl = _binary("initdb", *dirs), _binary("pg_ctl", *dirs)
        if self.initdb is None or self.pg_ctl is None:
            _missing("PostgreSQL is not installed (.ci/run installs it: apt-get install postgresql)")
        self.user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
        # Directly under /tmp: pytest's own folders are closed to other users.
        self.root = Path(tempfile.mkdtemp(prefix="modelfleet-pg-"))
        self.data = self.root / "pgdata"
        if self.user:
            import shutil

            shutil.chown(self.root, self.user)
        self.port = free_port()
        self._run(self.initdb, "-D", str(self.data), "-U", "modelfleet", "--auth=trust", "-E", "UTF8")
        self.start()
        self.url = f"postgresql://modelfleet@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, user=self.user, cwd="/", timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"{argv[0]} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.data / "log"), "-w", "start")

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


def _wait_port(port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    with __import__("contextlib").suppress(AssertionError):
        server.stop()
    server.remove()


def cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([PY, "-m", "modelfleet", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


class MotoServer:
    """moto in server mode: the AWS API (SageMaker, Secrets Manager, ...) on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        _wait_port(self.port, 30)
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.url}  # fmt: skip

    def client(self, service: str):
        import boto3

        return boto3.client(service, region_name="us-east-1", endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def queue_results(self, *bodies: object) -> None:
        """What moto's invoke_endpoint answers next, one body per call."""
        results = [{"Body": b if isinstance(b, str) else json.dumps(b), "ContentType": "application/json",
                    "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""} for b in bodies]  # fmt: skip
        httpx.post(
            self.url + "/moto-api/static/sagemaker/endpoint-results", json={"results": results}
        ).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()
