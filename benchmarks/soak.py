"""Does the gateway hold steady? A million mixed requests, with its memory and open files sampled.

    python benchmarks/soak.py [--requests 1000000] [--json out.json]

A fake upstream and the load share core 1; the gateway (a team key, every limit, the usage ledger,
the access log) has core 0. wrk sends a rotating mix: answers, streams, 400s (a string temperature),
404s (an unknown model) and 401s (a bad key); a second client opens streams and drops them after the
first event. The gateway's RSS and open file descriptors are read from /proc after each segment.
Goal: RSS flat within 5 % after warm-up (the first tenth of the requests), file descriptors flat.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PY = sys.executable
KEY = "soak-key-0123456789abcdef"
BODIES = [
    ('{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}', KEY),
    ('{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": true}', KEY),
    ('{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": "0.7"}', KEY),
    ('{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}', KEY),
    ('{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}', "wrong-key-0123456789abcdef"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def dropper(port: int, stop: threading.Event, counter: list[int]) -> None:
    """Open a stream, read its first bytes, hang up: over and over."""
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request = head + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                s.recv(256)
            counter[0] += 1
        except OSError:
            pass
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--segment", type=float, default=15, help="seconds of load between samples")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="mf-soak-"))
    procs: list[subprocess.Popen] = []
    try:
        up = subprocess.Popen(["taskset", "-c", "1", PY, "-m", "modelfleet.testing.fake_upstream", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(up)
        up_port = int(up.stdout.readline().split("port=")[1])  # type: ignore[union-attr]
        port = free_port()
        fleet = tmp / "fleet.yaml"
        fleet.write_text(f"""\
server: {{port: {port}, access_log: true}}
state: {{store: "sqlite:///{tmp}/mf.db"}}
teams: {{soak: {{keys: ["{KEY}"], limits: {{rpm: 100000000, tpm: 1000000000000, concurrency: 100000}}}}}}
deployments: {{up: {{kind: openai, urls: ["http://127.0.0.1:{up_port}/v1"]}}}}
routes: {{chat: {{deployments: [up]}}}}
""")
        log = open(tmp / "gateway.log", "w")  # noqa: SIM115
        gw = subprocess.Popen(["taskset", "-c", "0", PY, "-m", "modelfleet", "serve", "-f", str(fleet)], stderr=log)
        procs.append(gw)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        lua = tmp / "mix.lua"
        lua.write_text("local reqs = {}\n" + "".join(
            f'reqs[{i + 1}] = wrk.format("POST", "/v1/chat/completions", '
            f'{{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {key}"}}, {json.dumps(body)})\n'
            for i, (body, key) in enumerate(BODIES)
        ) + "local n = 0\nrequest = function()\n  n = n + 1\n  return reqs[(n % #reqs) + 1]\nend\n")  # fmt: skip
        stop, dropped = threading.Event(), [0]
        threading.Thread(target=dropper, args=(port, stop, dropped), daemon=True).start()
        done, rows = 0, []
        started = time.monotonic()
        print(f"{'requests':>10} {'dropped':>8} {'RSS MB':>8} {'FDs':>5} {'req/s':>7}")
        while done < args.requests:
            out = subprocess.run(
                ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{int(args.segment)}s", "-s", str(lua),
                 f"http://127.0.0.1:{port}/v1/chat/completions"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            n = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
            done += n
            rss, fds = sample(gw.pid)
            rows.append({"requests": done, "dropped": dropped[0], "rss_mb": round(rss, 1), "fds": fds})
            print(f"{done:>10,} {dropped[0]:>8,} {rss:>8.1f} {fds:>5} {n / args.segment:>7.0f}", flush=True)
        stop.set()
        warm = [r for r in rows if r["requests"] >= args.requests / 10] or rows
        base = warm[0]["rss_mb"]
        growth = (max(r["rss_mb"] for r in warm) - base) / base * 100
        verdict = "flat" if growth <= 5 else "GROWING"
        print(f"\n{done:,} requests in {time.monotonic() - started:.0f}s; RSS after warm-up {base:.1f} MB -> "
              f"max {max(r['rss_mb'] for r in warm):.1f} MB (+{growth:.1f}%, goal <= 5%: {verdict}); "
              f"FDs {warm[0]['fds']} -> {warm[-1]['fds']}")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"rows": rows, "growth_pct": growth}, indent=1))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
