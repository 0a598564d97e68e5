"""Render four of the dashboard's panels from a real Prometheus scraping a gateway under traffic (the README's image).

    python benchmarks/dashboard_panels.py [--seconds 90] [-o docs/observability-panels.png]

Two fake upstreams serve one A/B route (variant a streams a token every 10 ms, b every 25 ms) for two
teams; Prometheus (Debian's `prometheus`) scrapes every second. The panels are the dashboard's own
queries (deploy/observability/dashboard.py), evaluated with query_range and drawn with matplotlib.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from modelfleet.deploy.observability import queries

PY = sys.executable
PANELS = ["p95 TTFT by variant", "p95 TPOT by variant", "Output tokens/s by team", "Answers by status"]
KEYS = {"search": "search-key-0123456789abcdef", "support": "support-key-0123456789abcdef"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def traffic(base: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            team = random.choice(["search", "search", "support"])
            body = {"model": "chat", "stream": True, "max_tokens": random.randint(8, 48),
                    "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
            c.post(base + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEYS[team]}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=90)
    ap.add_argument("-o", "--out", type=Path, default=Path("docs/observability-panels.png"))
    args = ap.parse_args()
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    tmp = Path(tempfile.mkdtemp(prefix="mf-panels-"))
    procs: list[subprocess.Popen] = []
    try:
        ups = []
        for delay in ("0.01", "0.025"):
            p = subprocess.Popen([PY, "-m", "modelfleet.testing.fake_upstream", "--port", "0", "--chunks", "48",
                                  "--chunk-delay", delay], stdout=subprocess.PIPE, text=True)  # fmt: skip
            procs.append(p)
            ups.append(f"http://127.0.0.1:{p.stdout.readline().split('port=')[1].strip()}/v1")
        port = free_port()
        fleet = tmp / "fleet.yaml"
        fleet.write_text(
            f"server: {{port: {port}, access_log: false}}\nteams:\n"
            + "".join(f"  {t}: {{keys: ['{k}']}}\n" for t, k in KEYS.items())
            + f"deployments:\n  a: {{kind: openai, urls: ['{ups[0]}'], model: fake-model}}\n"
            f"  b: {{kind: openai, urls: ['{ups[1]}'], model: fake-model}}\n"
            "routes:\n  chat: {deployments: {a: 70, b: 30}}\n"
        )
        procs.append(subprocess.Popen([PY, "-m", "modelfleet", "serve", "-f", str(fleet)], stderr=subprocess.DEVNULL))
        wait(f"http://127.0.0.1:{port}/readyz")
        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n"
            f"- {{job_name: modelfleet, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}\n"
        )
        argv = [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}"]  # fmt: skip
        procs.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
        wait(f"http://127.0.0.1:{prom_port}/-/ready")
        stop = threading.Event()
        senders = [threading.Thread(target=traffic, args=(f"http://127.0.0.1:{port}", stop)) for _ in range(4)]
        started = time.time()
        for s in senders:
            s.start()
        print(f"traffic for {args.seconds}s ...", flush=True)
        time.sleep(args.seconds)
        stop.set()
        for s in senders:
            s.join()
        draw(f"http://127.0.0.1:{prom_port}", started + 15, time.time(), args.out)
        print(f"wrote {args.out}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def draw(prom: str, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exprs = dict(queries())
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5))
    for ax, title in zip(axes.flat, PANELS, strict=True):
        expr = exprs[title].replace("$route", ".*").replace("$team", ".*").replace("$__rate_interval", "10s")
        r = httpx.get(prom + "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": 2})
        for series in r.json()["data"]["result"]:
            m = series["metric"]
            label = " / ".join(m[k] for k in ("route", "variant", "team", "status") if k in m)
            xs = [float(t) - start for t, _ in series["values"]]
            ys = [float(v) * (1000 if "TTFT" in title or "TPOT" in title else 1) for _, v in series["values"]]
            ax.plot(xs, ys, label=label)
        unit = " (ms)" if "TTFT" in title or "TPOT" in title else (" (tokens/s)" if "tokens" in title else " (req/s)")
        ax.set_title(title + unit, fontsize=10)
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("modelfleet dashboard panels, from Prometheus scraping a gateway (A/B route, two teams)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main()
