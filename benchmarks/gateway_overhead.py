"""What the gateway costs: modelfleet vs a bare aiohttp proxy vs the upstream alone, in one run.

    python benchmarks/gateway_overhead.py [--duration 5] [--rounds 3] [--json out.json]

A fast fake OpenAI upstream and wrk share core 1; the proxy under test gets core 0 to itself,
and only one proxy is loaded at a time. For each of upstream / bare proxy / modelfleet, streaming
and not, it prints RPS at concurrency 32 and p50/p99 latency at concurrency 1, then modelfleet's
ratios to the bare proxy and its added latency over the upstream alone. A TCP byte relay
(`tcp_relay.py`, no HTTP) on core 0 shows what one more hop costs on this machine before any parsing,
and a lean proxy (`lean_proxy.py`: httptools on both sides, nothing else) the least a Python proxy that
parses HTTP adds.
modelfleet runs its full path: validation, routing, dispatch, metrics, access log (to a file),
usage ledger. Two more modelfleet gateways add auth and limits (a team key; rpm, tpm, concurrency
and a daily token budget, all checked per request, none reached): one keeps its counters in
process (with SQLite), one in a redis-server on core 1 (started here; `apt-get install redis-server`).
Two more trace every request (OpenTelemetry, exported over OTLP/HTTP to a sink on core 1) at sampling
1.0 and 0.01; their RPS and latency are reported as ratios to the same gateway with tracing off.
Every target gets the same request, Authorization header included. Targets are measured in
interleaved rounds and each number is the median over rounds, so a slow minute on a shared machine
touches every target alike instead of whichever ran then. Ratios are paired: each is taken within
one round, never across rounds, and the median over rounds reported; the order of targets rotates
each round, so none is always measured first or last.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 16}
# The hot path's goals (issue 15), all as ratios to the bare proxy measured in the same run.
GOALS = {
    ("json", "mf+auth", "rps"): 0.9,  # team key + every limit, in-process counters
    ("stream", "mf+auth", "rps"): 0.8,
    ("json", "mf+auth+redis", "rps"): 0.85,
}
P99_C32_GOAL = 1.5  # p99 at concurrency 32, at most this many times the bare proxy's
ADDED_P50_GOAL_MS = 0.25  # added to the upstream's own p50 at concurrency 1
KEY = "bench-key-0123456789abcdef"
LIMITS = "{rpm: 100000000, tpm: 1000000000000, concurrency: 100000, tokens_per_day: 1000000000000}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {timeout}s")


def start(argv: list[str], core: int, **kw) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", str(core), *argv], **kw)


def wrk(url: str, lua: Path, conns: int, seconds: float) -> tuple[float, float, float]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{int(seconds)}s", "--latency", "-s", str(lua), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, _pct(out, "50"), _pct(out, "99")


def _pct(out: str, p: str) -> float:
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return float(m.group(1)) * scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5, help="seconds per measurement (default 5)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="TARGET",
        help="measure only these targets (upstream, tcp-relay, lean-proxy, bare-proxy, modelfleet, mf+auth, "
        "mf+auth+redis, mf+trace1.0, mf+trace0.01, baseline, baseline+auth, baseline+redis); ratios need their "
        "references",
    )
    ap.add_argument("--baseline", type=Path, metavar="SRC",
                    help="also run gateways from this source folder (e.g. another checkout's src/), as `baseline`, "
                         "`baseline+auth` and `baseline+redis`, to compare code in one run window")  # fmt: skip
    args = ap.parse_args()
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux"), ("redis-server", "redis-server")):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed: apt-get install {package}")

    tmp = Path(tempfile.mkdtemp(prefix="mf-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        up = start([PY, "-m", "modelfleet.testing.fake_upstream", "--port", "0", "--chunks", "16"], core=1,
                   stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(up)
        up_port = int(up.stdout.readline().split("port=")[1])
        upstream = f"http://127.0.0.1:{up_port}"

        bare_port = free_port()
        procs.append(start([PY, str(HERE / "bare_proxy.py"), upstream + "/v1", str(bare_port)], core=0))
        relay_port = free_port()
        procs.append(start([PY, str(HERE / "tcp_relay.py"), str(up_port), str(relay_port)], core=0))
        lean_port = free_port()
        procs.append(start([PY, str(HERE / "lean_proxy.py"), upstream, str(lean_port)], core=0))

        redis_port = free_port()
        procs.append(start(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], core=1,
                           stdout=subprocess.DEVNULL))  # fmt: skip
        sink_port = free_port()
        procs.append(start([PY, str(HERE / "otlp_sink.py"), str(sink_port)], core=1))
        sink = f"http://127.0.0.1:{sink_port}"
        gateways = {}
        team = f"teams:\n  bench: {{keys: ['{KEY}'], limits: {LIMITS}}}\n"

        def redis(db: int) -> str:  # each such gateway its own database: one's counters never meet another's
            return (
                f"state: {{store: 'sqlite:///{tmp}/redis{db}.db', counters: 'redis://127.0.0.1:{redis_port}/{db}'}}\n"
            )

        for name, extra in (
            ("modelfleet", ""),
            ("mf+auth", team),
            ("mf+auth+redis", redis(0) + team),
            ("mf+trace1.0", f"observability: {{otlp_endpoint: '{sink}', sample_ratio: 1.0}}\n"),
            ("mf+trace0.01", f"observability: {{otlp_endpoint: '{sink}', sample_ratio: 0.01}}\n"),
            *((("baseline", ""), ("baseline+auth", team), ("baseline+redis", redis(1) + team))
              if args.baseline else ()),
        ):  # fmt: skip
            if args.only and name not in args.only:
                continue
            port = free_port()
            fleet = tmp / f"{name}.yaml"
            state = "" if "state:" in extra else f"state: {{store: 'sqlite:///{tmp}/{name}.db'}}\n"
            fleet.write_text(
                f"server: {{port: {port}, access_log: true}}\n{state}{extra}"
                f"deployments:\n  fake: {{kind: openai, urls: ['{upstream}/v1'], model: fake-model}}\n"
                "routes:\n  bench: {deployments: [fake], timeout: 30s}\n"
            )
            log = open(tmp / f"{name}.log", "w")  # noqa: SIM115
            # A baseline gateway runs another checkout's code (e.g. main's), measured in the same rounds.
            env = {**os.environ, "PYTHONPATH": str(args.baseline)} if name.startswith("baseline") else None
            procs.append(start([PY, "-m", "modelfleet", "serve", "-f", str(fleet)], core=0, stderr=log, env=env))
            gateways[name] = f"http://127.0.0.1:{port}"
        for base in gateways.values():
            wait_http(base + "/readyz")
        time.sleep(1.0)

        results: dict[str, dict[str, dict[str, float]]] = {}
        samples: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        targets = (("upstream", upstream), ("tcp-relay", f"http://127.0.0.1:{relay_port}"),
                   ("lean-proxy", f"http://127.0.0.1:{lean_port}"), ("bare-proxy", f"http://127.0.0.1:{bare_port}"),
                   *gateways.items())  # fmt: skip
        targets = tuple((n, b) for n, b in targets if not args.only or n in args.only)
        for rnd in range(args.rounds):
            for stream in (False, True):
                lua = tmp / f"post-{stream}.lua"
                body = {**BODY, "stream": stream}
                lua.write_text(
                    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
                    f"wrk.body = '{json.dumps(body)}'\n"
                )
                mode = "stream" if stream else "json"
                for name, base in targets[rnd % len(targets) :] + targets[: rnd % len(targets)]:
                    url = base + "/v1/chat/completions"
                    wrk(url, lua, 32, 1)  # warm-up
                    rps, _, p99_32 = wrk(url, lua, 32, args.duration)
                    _, p50, p99 = wrk(url, lua, 1, args.duration)
                    samples.setdefault((mode, name), []).append((rps, p99_32, p50, p99))
                    print(f"round {rnd + 1} {mode:6} {name:13} rps@32={rps:8.0f}  p99@32={p99_32:6.2f}ms  "
                          f"p50@1={p50:6.3f}ms  p99@1={p99:6.3f}ms", flush=True)  # fmt: skip
        print("\nmedians over rounds:")
        for (mode, name), runs in samples.items():
            rps, p99_32, p50, p99 = (statistics.median(col) for col in zip(*runs, strict=True))
            results.setdefault(mode, {})[name] = {"rps_c32": rps, "p99_ms_c32": p99_32, "p50_ms_c1": p50,
                                                  "p99_ms_c1": p99}  # fmt: skip
            print(f"{mode:6} {name:13} rps@32={rps:8.0f}  p99@32={p99_32:6.2f}ms  p50@1={p50:6.3f}ms  "
                  f"p99@1={p99:6.3f}ms")  # fmt: skip
        report(results, samples, args)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict, samples: dict, args: argparse.Namespace) -> None:
    """Ratios and differences paired within each round, then the median over rounds."""

    def paired(mode: str, name: str, ref: str, col: int, op: Callable[[float, float], float]) -> float:
        a, b = samples[(mode, name)], samples[(mode, ref)]
        return statistics.median(op(x[col], y[col]) for x, y in zip(a, b, strict=True))

    ratio, minus = operator.truediv, operator.sub
    rps, p99_32, p50_1, p99_1 = range(4)  # the columns of a sample
    print("\nmodelfleet against the bare aiohttp proxy and the upstream alone (gateway pinned to one core;")
    print("ratios and differences paired within each round, median over rounds):")
    summary: dict[str, dict[str, float]] = {}
    for mode, rows in results.items():
        summary[mode] = {}
        if "modelfleet" in rows:
            for name in ("mf+trace1.0", "mf+trace0.01"):
                if name in rows:
                    r, p50, p99 = (paired(mode, name, "modelfleet", c, ratio) for c in (rps, p50_1, p99_1))
                    summary[mode][f"{name}_rps_ratio_vs_modelfleet"] = r
                    summary[mode][f"{name}_p50_ratio_vs_modelfleet"] = p50
                    print(f"  {mode:6}: {name}: RPS {r:.2f}x tracing off; p50 {p50:.2f}x, p99 {p99:.2f}x")
        pairs = (("modelfleet", "baseline"), ("mf+auth", "baseline+auth"), ("mf+auth+redis", "baseline+redis"))
        for name, ref in pairs:
            if name in rows and ref in rows:
                r, p50 = paired(mode, name, ref, rps, ratio), paired(mode, name, ref, p50_1, minus)
                summary[mode][f"{name}_rps_ratio_vs_{ref}"] = r
                print(f"  {mode:6}: {name}: RPS {r:.2f}x {ref}; p50 {p50:+.3f} ms over {ref}")
        if "upstream" in rows and "tcp-relay" in rows:
            floor = paired(mode, "tcp-relay", "upstream", p50_1, minus)
            summary[mode]["tcp_relay_added_p50_ms"] = floor
            print(f"  {mode:6}: a TCP byte relay (one more hop, no HTTP) adds +{floor:.3f} ms p50 at c=1: "
                  "this machine's floor for any proxy")  # fmt: skip
        if "upstream" in rows and "lean-proxy" in rows:
            lean = paired(mode, "lean-proxy", "upstream", p50_1, minus)
            summary[mode]["lean_proxy_added_p50_ms"] = lean
            print(f"  {mode:6}: a lean proxy (httptools both sides, nothing else) adds +{lean:.3f} ms p50 at c=1: "
                  "the floor for a Python proxy that parses HTTP")  # fmt: skip
        if not all(n in rows for n in ("bare-proxy", "upstream")):
            continue
        bare_added = paired(mode, "bare-proxy", "upstream", p50_1, minus)
        print(f"  {mode:6}: the bare proxy adds +{bare_added:.3f} ms p50 at c=1, "
              f"p99 at c=32 {rows['bare-proxy']['p99_ms_c32']:.2f} ms")  # fmt: skip
        for name in ("modelfleet", "mf+auth", "mf+auth+redis"):
            if name not in rows:
                continue
            r = paired(mode, name, "bare-proxy", rps, ratio)
            tail = paired(mode, name, "bare-proxy", p99_32, ratio)
            added50 = paired(mode, name, "upstream", p50_1, minus)
            own = paired(mode, name, "bare-proxy", p50_1, minus)
            summary[mode].update({f"{name}_rps_ratio_vs_bare": r, f"{name}_p99_c32_ratio_vs_bare": tail,
                                  f"{name}_added_p50_ms": added50})  # fmt: skip
            goal = GOALS.get((mode, name, "rps"))
            verdicts = [_verdict(tail <= P99_C32_GOAL), _verdict(added50 <= ADDED_P50_GOAL_MS)]
            if goal is not None:
                verdicts.insert(0, _verdict(r >= goal))
            print(
                f"  {mode:6}: {name:13} RPS {r:.2f}x bare"
                + (f" (goal >= {goal})" if goal else "")
                + f"; p99@32 {tail:.2f}x bare (goal <= {P99_C32_GOAL}); added p50@1 +{added50:.3f} ms "
                f"(goal <= {ADDED_P50_GOAL_MS}; its own work over the bare proxy's {own:+.3f} ms)  "
                f"[{', '.join(verdicts)}]"
            )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "summary": summary, "cpus": os.cpu_count()}, indent=2))


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


if __name__ == "__main__":
    main()
