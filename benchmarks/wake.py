"""Wake-on-request against a plain cold start: the time to the first answer, on the embedded engine.

    python benchmarks/wake.py [--runs 5]

cold: spawn the engine alone (`python -m modelfleet.engine --model <bundled SmolLM2>`) and send one
      chat request the moment it says it is ready: time from the spawn to the answer.
wake: `modelfleet serve` with the same engine as a llama-cpp deployment (wake_on_request), stopped
      through the admin API; send the same request: time from sending it to the answer.
Both use one thread and the same request (8 tokens, greedy). Target: wake <= cold + 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from modelfleet.engine.model import bundled_model_path

PY = sys.executable
ADMIN = "bench-admin-key-0123456789"
BODY = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0}


def post(url: str, body: dict, headers: dict | None = None, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(pattern, line):
            return m
    raise SystemExit(f"{pattern!r} not seen")


def cold_start() -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "modelfleet.engine", "--model", str(bundled_model_path()), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        port = read_until(proc, r"MODELFLEET_ENGINE_READY port=(\d+)").group(1)
        post(f"http://127.0.0.1:{port}/v1/chat/completions", {"model": "model", **BODY})
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(10)


def wake_times(runs: int) -> list[float]:
    tmp = Path(tempfile.mkdtemp(prefix="mf-wake-"))
    fleet = tmp / "fleet.yaml"
    fleet.write_text(
        f"state: {{store: 'sqlite:///{tmp}/mf.db'}}\nauth: {{admin_key: {ADMIN}}}\n"
        "deployments:\n  engine: {kind: llama-cpp, threads: 1, wake_on_request: true}\n"
        "routes:\n  engine: {deployments: [engine]}\n"
    )
    proc = subprocess.Popen([PY, "-m", "modelfleet", "serve", "-f", str(fleet), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        base = None
        while base is None:
            line = proc.stderr.readline()
            if m := re.search(r"listening on (http://[0-9.:]+)", line):
                base = m.group(1)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        post(base + "/v1/chat/completions", {"model": "engine", **BODY})  # warm: the first load reads the file
        times = []
        for _ in range(runs):
            post(base + "/admin/deployments/engine/stop", {}, admin)
            time.sleep(1.0)  # stopped for a moment, as after an idle stop
            started = time.perf_counter()
            post(base + "/v1/chat/completions", {"model": "engine", **BODY})
            times.append(time.perf_counter() - started)
        return times
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    cold_start()  # warm the page cache with the model file, as the gateway's first load does
    cold = [cold_start() for _ in range(args.runs)]
    wake = wake_times(args.runs)
    for name, xs in (("cold start (engine alone)", cold), ("wake through the gateway", wake)):
        print(f"{name:28} median {statistics.median(xs):.3f} s  (runs: {', '.join(f'{x:.3f}' for x in xs)})")
    extra = statistics.median(wake) - statistics.median(cold)
    print(f"\nwake - cold = {extra * 1000:+.0f} ms at the median (target <= +500 ms)")


if __name__ == "__main__":
    main()
