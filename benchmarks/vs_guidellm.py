"""Validate `modelfleet bench run` against guidellm on the same servers, prompts and concurrency.

    python benchmarks/vs_guidellm.py --guidellm /path/to/venv/bin/guidellm

guidellm is not a modelfleet dependency (0.8.1 requires torch): install it in its own venv, e.g.
`python -m venv /tmp/gl && /tmp/gl/bin/pip install torch==2.13.0 guidellm==0.8.1`.

1. The embedded engine (SmolLM2 via `modelfleet serve`), concurrency 1: TTFT and the per-token
   latency should agree within 5%. Names differ: guidellm's "ITL" is (last - first)/(tokens - 1),
   which is vLLM's and modelfleet's TPOT; modelfleet's ITL is the gap between chunks.
2. A fast fake server, concurrency 4, both clients pinned to core 0 and the server to core 1:
   the measurement overhead shows as TTFT and requests/s.
Both ask for exactly 48 tokens per answer (guidellm sends ignore_eos; so does modelfleet here).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PY = sys.executable


def start(argv: list[str], pattern: str, core: int | None = None) -> tuple[subprocess.Popen, str]:
    cmd = (["taskset", "-c", str(core)] if core is not None else []) + argv
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # type: ignore[union-attr]
        if m := re.search(pattern, line):
            return proc, m.group(1)
    raise SystemExit(f"{argv[:4]} did not start")


def ours(url: str, model: str, promptset: Path, n: int, c: int, out: Path) -> dict:
    subprocess.run(
        ["taskset", "-c", "0", PY, "-m", "modelfleet", "bench", "run", "--url", url, "--model", model,
         "--promptset", str(promptset), "-n", str(n), "-c", str(c), "-o", str(out), "--ignore-eos"],
        check=True, capture_output=True,
    )  # fmt: skip
    s = json.loads(out.read_text())["summary"]
    return {
        "ttft_ms": s["ttft_s"]["mean"] * 1000,
        "tpot_ms": (s["tpot_s"] or {}).get("mean", float("nan")) * 1000,
        "rps": s["request_throughput"],
    }


def guidellm(exe: str, base: str, model: str, data: Path, n: int, c: int, out: Path) -> dict:
    scenario = out.with_suffix(".scenario.json")
    scenario.write_text(json.dumps({"spec": {
        "backend": {"kind": "openai_http", "target": base, "model": model, "request_format": "/v1/chat/completions"},
        "profile": {"kind": "concurrent", "streams": c},
        "data": [{"kind": "json_file", "path": str(data)}],
        "constraints": [{"kind": "max_requests", "count": n}],
        "outputs": [{"kind": "json", "path": str(out)}],
    }}))  # fmt: skip
    subprocess.run(["taskset", "-c", "0", exe, "run", "-c", str(scenario), "--disable-console"], check=True,
                   capture_output=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    m = json.loads(out.read_text())["benchmarks"][0]["metrics"]
    return {
        "ttft_ms": m["time_to_first_token_ms"]["successful"]["mean"],
        "tpot_ms": m["inter_token_latency_ms"]["successful"]["mean"],  # guidellm's ITL = vLLM's TPOT
        "rps": m["requests_per_second"]["successful"]["mean"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guidellm", required=True, help="path to the guidellm executable")
    ap.add_argument("--engine-requests", type=int, default=12)
    ap.add_argument("--fake-requests", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mf-vs-guidellm-"))
    promptset = tmp / "ps"
    subprocess.run([PY, "-m", "modelfleet", "promptset", "generate", "--packs", "general-qa", "-n", "20", "--seed",
                    "3", "-o", str(promptset)], check=True, capture_output=True)  # fmt: skip
    # The same prompts and output lengths for guidellm; greedy decoding keeps the answers the same.
    rows = [json.loads(line) for line in (promptset / "promptset.jsonl").read_text().splitlines()]
    data = tmp / "guidellm.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["messages"][0]["content"], "output_tokens_count": 48}) + "\n"
                            for r in rows))  # fmt: skip
    for r in rows:
        r["max_tokens"] = 48
    (promptset / "promptset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    procs = []
    try:
        gw, base = start([PY, "-m", "modelfleet", "serve", "--port", "0"], r"ready: OpenAI-compatible API at (\S+)/v1",
                         core=1)  # fmt: skip
        procs.append(gw)
        fake, port = start([PY, "-m", "modelfleet.testing.fake_upstream", "--port", "0", "--chunks", "16"],
                           r"FAKE_UPSTREAM_READY port=(\d+)", core=1)  # fmt: skip
        procs.append(fake)
        fake_base = f"http://127.0.0.1:{port}"
        rows_out = []
        for label, url_base, model, n, c in (
            ("embedded engine, c=1", base, "smollm2", args.engine_requests, 1),
            ("fast fake server, c=4", fake_base, "fake", args.fake_requests, 4),
        ):
            ours(url_base + "/v1", model, promptset, 3, 1, tmp / "warmup.json")  # an engine's first inferences are slow
            mine = ours(url_base + "/v1", model, promptset, n, c, tmp / "ours.json")
            theirs = guidellm(args.guidellm, url_base, model, data, n, c, tmp / "guidellm.json")
            rows_out.append((label, mine, theirs))
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
    print(f"{'':24} {'TTFT mean ms':>22} {'TPOT mean ms (guidellm: ITL)':>30} {'requests/s':>20}")
    for label, mine, theirs in rows_out:
        cells = []
        for key in ("ttft_ms", "tpot_ms", "rps"):
            ratio = mine[key] / theirs[key] if theirs[key] else float("nan")
            cells.append(f"{mine[key]:8.3f} vs {theirs[key]:8.3f} ({ratio:.2f}x)")
        print(f"{label:24} {cells[0]:>26} {cells[1]:>30} {cells[2]:>28}")
    print("(modelfleet vs guidellm; ratio = modelfleet / guidellm)")
    print(json.dumps({label: {"modelfleet": mine, "guidellm": theirs} for label, mine, theirs in rows_out}))


if __name__ == "__main__":
    main()
