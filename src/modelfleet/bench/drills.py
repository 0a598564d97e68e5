"""Failure drills: make something fail on purpose and check the fleet answers the way it promises.

`run_drills()` starts a drill fleet of its own: `modelfleet serve` with the embedded llama.cpp engine
and fake upstreams that fail in known ways (modelfleet.testing.fake_upstream), then runs each drill
against it over HTTP and stops everything. Every drill states its expected outcome up front.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

DRILL_KEY = "drill-key-0123456789abcdef"  # the drill fleet has teams, so every request carries a key
QUOTA_KEY = "quota-key-0123456789abcdef"  # a team with rpm: 3


@dataclass
class Outcome:
    name: str
    expected: str
    status: str  # pass | fail | skipped
    detail: str


@dataclass
class Fleet:
    url: str  # …/v1
    gateway_pid: int
    replica_pids: dict[str, int]  # the fake upstreams behind the `pair` deployment, by replica name


class _Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None  # keeps reading its output once it is up

    @classmethod
    async def start(cls, *argv: str, ready: str, timeout: float = 120) -> tuple[_Proc, re.Match[str]]:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
        )
        me = cls(proc)
        rx = re.compile(ready)
        deadline = time.monotonic() + timeout
        assert proc.stdout
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            me.lines.append(line)
            if m := rx.search(line):
                me._drain = asyncio.create_task(me._keep_reading())
                return me, m
        await me.stop()
        raise RuntimeError(f"{argv[2:4]} did not start: {' | '.join(me.lines[-5:])}")

    async def _keep_reading(self) -> None:
        assert self.proc.stdout
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def drill_fleet(*, engine: bool = True) -> AsyncIterator[Fleet]:
    """The drill fleet; `engine=False` leaves out the embedded engine (for drills that do not use it)."""
    py = sys.executable
    procs: list[_Proc] = []
    try:
        ups = {}
        failing = {
            "slow": ["--delay", "5"],
            "broken": ["--status", "500"],
            "dies": ["--chunks", "20", "--chunk-delay", "0.02", "--die-after", "5"],
        }
        pids = {}
        for name, flags in {**failing, "pair-0": [], "pair-1": [], "fast": []}.items():
            p, m = await _Proc.start(py, "-m", "modelfleet.testing.fake_upstream", "--port", "0", *flags,
                                     ready=r"FAKE_UPSTREAM_READY port=(\d+)")  # fmt: skip
            procs.append(p)
            ups[name] = f"http://127.0.0.1:{m.group(1)}/v1"
            pids[name] = p.proc.pid
        home = Path(tempfile.mkdtemp(prefix="modelfleet-drill-"))
        fleet = home / "fleet.yaml"
        fleet.write_text(
            f"state: {{store: 'sqlite:///{home}/modelfleet.db'}}\n"
            f"teams:\n  drill: {{keys: ['{DRILL_KEY}']}}\n"
            f"  quota: {{keys: ['{QUOTA_KEY}'], routes: [fast], limits: {{rpm: 3}}}}\n"
            "deployments:\n"
            + ("  engine: {kind: llama-cpp, replicas: 1, max_queue: 64}\n" if engine else "")
            + "".join(f"  {n}: {{kind: openai, urls: ['{ups[n]}'], health: {{interval: 60s}}}}\n" for n in failing)
            + f"  pair: {{kind: openai, urls: ['{ups['pair-0']}', '{ups['pair-1']}']}}\n"
            f"  fast: {{kind: openai, urls: ['{ups['fast']}']}}\n"
            "  gone: {kind: openai, urls: ['http://127.0.0.1:9/v1'], health: {interval: 60s}}\n"
            "routes:\n"
            + ("  engine: {deployments: [engine], timeout: 60s}\n" if engine else "")
            + "  slow: {deployments: [slow], timeout: 1s}\n  broken: {deployments: [broken]}\n"
            "  dies: {deployments: [dies]}\n  pair: {deployments: [pair], timeout: 10s}\n"
            "  fast: {deployments: [fast]}\n  strict: {deployments: [gone], fallbacks: none}\n"
        )
        gw, m = await _Proc.start(py, "-m", "modelfleet", "serve", "-f", str(fleet), "--port", "0",
                                  ready=r"listening on (http://[0-9.]+:[0-9]+)")  # fmt: skip
        procs.append(gw)
        replicas = {"pair-0": pids["pair-0"], "pair-1": pids["pair-1"]}
        yield Fleet(url=m.group(1) + "/v1", gateway_pid=gw.proc.pid, replica_pids=replicas)
    finally:
        for p in reversed(procs):
            await p.stop()


def engine_pids(gateway_pid: int) -> list[int]:
    """The gateway's engine processes (children running modelfleet.engine), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == gateway_pid and b"modelfleet.engine" in cmd:
            pids.append(int(entry.name))
    return pids


async def _chat(session: aiohttp.ClientSession, url: str, model: str, *, stream: bool = False,
                max_tokens: int = 8, key: str = DRILL_KEY) -> tuple[int, str]:  # fmt: skip
    status, text, _ = await _chat_headers(session, url, model, stream=stream, max_tokens=max_tokens, key=key)
    return status, text


async def _chat_headers(session: aiohttp.ClientSession, url: str, model: str, *, stream: bool = False,
                        max_tokens: int = 8, key: str = DRILL_KEY) -> tuple[int, str, dict[str, str]]:  # fmt: skip
    body = {"model": model, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": max_tokens,
            "stream": stream}  # fmt: skip
    async with session.post(url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def _wait_ready(session: aiohttp.ClientSession, fleet: Fleet, timeout: float = 120) -> None:
    base = fleet.url.removesuffix("/v1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(base + "/readyz") as resp:
            doc = await resp.json()
            if doc["routes"].get("engine"):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the drill fleet's engine did not become ready")


async def slow_engine_start(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    # Sent the moment the gateway listens, while the engine is still loading its model.
    started = time.monotonic()
    results = await asyncio.gather(*(_chat(session, fleet.url, "engine") for _ in range(3)))
    took = time.monotonic() - started
    ok = all(status == 200 for status, _ in results)
    return ok, f"{sum(s == 200 for s, _ in results)}/3 answered 200 after waiting {took:.1f}s for the engine to start"


async def replica_killed_under_load(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    await _wait_ready(session, fleet)
    pids = engine_pids(fleet.gateway_pid)
    if not pids:
        return False, "found no engine process to kill"
    load = [asyncio.create_task(_chat(session, fleet.url, "engine", max_tokens=24)) for _ in range(6)]
    await asyncio.sleep(0.3)
    os.kill(pids[0], signal.SIGKILL)
    during = await asyncio.gather(*load)
    after = [await _chat(session, fleet.url, "engine") for _ in range(3)]
    failed = [(s, t) for s, t in during if s != 200]
    explicit = all(s == 502 and '"error"' in t for s, t in failed)
    ok = explicit and not failed and all(s == 200 for s, _ in after)
    return ok, (
        f"killed engine pid {pids[0]} under load: {len(during) - len(failed)}/{len(during)} in-flight requests "
        f"answered, {len(failed)} failed with explicit errors {sorted({s for s, _ in failed})}; "
        f"after the restart {sum(s == 200 for s, _ in after)}/3 answered"
    )


async def upstream_timeout(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    started = time.monotonic()
    status, text = await _chat(session, fleet.url, "slow")
    took = time.monotonic() - started
    ok = status == 504 and "upstream_timeout" in text and took < 3
    return ok, f"HTTP {status} after {took:.2f}s (route timeout 1s, upstream answers after 5s)"


async def upstream_error(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    status, text = await _chat(session, fleet.url, "broken")
    return status == 502 and "failed with HTTP 500" in text, f"HTTP {status}"


async def stream_dies(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    status, text = await _chat(session, fleet.url, "dies", stream=True)
    events = [line for line in text.splitlines() if line.startswith("data:")]
    ends_with_error = bool(events) and '"error"' in events[-1]
    return status == 200 and ends_with_error and len(events) > 1, (
        f"{len(events)} events, last: {events[-1][:90] if events else '(none)'}"
    )


async def quota_exceeded(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    replies = [await _chat_headers(session, fleet.url, "fast", key=QUOTA_KEY) for _ in range(4)]
    statuses = [s for s, _, _ in replies]
    _, text, headers = replies[-1]
    named = {h for h in headers if h.lower().startswith("x-ratelimit-")}
    ok = statuses == [200, 200, 200, 429] and "Retry-After" in headers and "limits.rpm" in text and bool(named)
    return ok, f"statuses {statuses}; Retry-After {headers.get('Retry-After')}; {', '.join(sorted(named))}"


async def strict_no_fallback(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    started = time.monotonic()
    status, text = await _chat(session, fleet.url, "strict")
    took = time.monotonic() - started
    ok = status == 503 and "fallbacks: none" in text and "deployment 'gone'" in text and took < 1
    return ok, f"HTTP {status} after {took * 1000:.0f} ms"


@dataclass
class FailoverResult:
    sent: int
    failed: int
    out_after: float | None  # seconds from the kill until the replica was out of rotation
    rate: float


async def failover_under_load(
    session: aiohttp.ClientSession, fleet: Fleet, *, rate: float = 200.0, seconds: float = 4.0, kill_at: float = 1.5
) -> FailoverResult:
    """Open-loop load at `rate` on the two-replica `pair` route; SIGKILL one replica at `kill_at`."""
    base = fleet.url.removesuffix("/v1")
    statuses: list[int] = []
    victim = "pair-1"

    async def one() -> None:
        try:
            status, _ = await _chat(session, fleet.url, "pair")
        except aiohttp.ClientError:
            status = 0
        statuses.append(status)

    async def watch(killed_at: float) -> float | None:
        while time.monotonic() - killed_at < seconds:
            async with session.get(base + "/readyz") as resp:
                doc = await resp.json()
            if any(r["replica"] == victim for r in doc["not_ready"].get("pair", [])):
                return time.monotonic() - killed_at
            await asyncio.sleep(0.002)
        return None

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    watcher: asyncio.Task[float | None] | None = None
    i = 0
    while (now := time.monotonic()) - start < seconds:
        if watcher is None and now - start >= kill_at:
            os.kill(fleet.replica_pids[victim], signal.SIGKILL)
            watcher = asyncio.create_task(watch(time.monotonic()))
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    out_after = await watcher if watcher else None
    return FailoverResult(len(statuses), sum(s != 200 for s in statuses), out_after, i / seconds)


async def replica_failover(session: aiohttp.ClientSession, fleet: Fleet) -> tuple[bool, str]:
    r = await failover_under_load(session, fleet)
    out = f"{r.out_after * 1000:.0f} ms" if r.out_after is not None else "never"
    ok = r.failed == 0 and r.out_after is not None and r.out_after <= 1.0
    return ok, f"{r.sent} requests at {r.rate:.0f}/s, {r.failed} failed; the killed replica was out after {out}"


Drill = Callable[[aiohttp.ClientSession, Fleet], Awaitable[tuple[bool, str]]]
DRILLS: list[tuple[str, str, Drill]] = [
    ("slow-engine-start", "requests sent while the engine loads wait for it and succeed", slow_engine_start),
    (
        "replica-killed-under-load",
        "zero failed requests: the one on the killed engine is retried and waits, with the queue, for the restart",
        replica_killed_under_load,
    ),
    ("upstream-timeout", "504 upstream_timeout within the route timeout", upstream_timeout),
    ("upstream-5xx", "502 naming the deployment", upstream_error),
    ("stream-dies-mid-way", "the stream ends with an explicit error event, not a silent truncation", stream_dies),
    ("quota-exceeded", "429 with Retry-After and x-ratelimit-* headers", quota_exceeded),
    ("strict-no-fallback", "an immediate error naming the unavailable deployment", strict_no_fallback),
    (
        "replica-failover",
        "a replica killed at 200 requests/s: no failed request, out of rotation within 1 s",
        replica_failover,
    ),
]


async def run_drills(
    only: set[str] | None = None, on_result: Callable[[Outcome], None] = lambda _: None
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    async with drill_fleet() as fleet, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for name, expected, drill in DRILLS:
            if only and name not in only:
                continue
            try:
                ok, detail = await drill(session, fleet)
                outcome = Outcome(name, expected, "pass" if ok else "fail", detail)
            except Exception as exc:  # a drill that crashes is a failed drill, not a crashed command
                outcome = Outcome(name, expected, "fail", f"{type(exc).__name__}: {exc}")
            outcomes.append(outcome)
            on_result(outcome)
    return outcomes
