"""Embedded engine: tokens/s through modelfleet vs llama-cpp-python called directly.

    python benchmarks/engine_throughput.py [--threads 1] [--tokens 128] [--runs 3]

Same GGUF (the bundled SmolLM2-135M-Instruct Q4_1), same threads, same greedy prompt, same
OMP_WAIT_POLICY=passive. Decode speed = (completion tokens - 1) / (last token time - first token time),
from a stream, so it measures generation and not start-up; end-to-end tokens/s is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import httpx

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to paint."}]


def direct(threads: int, tokens: int) -> tuple[float, float, int]:
    from llama_cpp import Llama

    from modelfleet.engine.model import bundled_model_path

    llm = Llama(model_path=str(bundled_model_path()), n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                verbose=False)  # fmt: skip
    llm.create_chat_completion(messages=PROMPT, max_tokens=4)  # warm-up
    start = time.perf_counter()
    stamps = []
    for chunk in llm.create_chat_completion(messages=PROMPT, max_tokens=tokens, temperature=0, stream=True):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            stamps.append(time.perf_counter())
    n = len(stamps)
    return (n - 1) / (stamps[-1] - stamps[0]), n / (stamps[-1] - start), n


def through_gateway(url: str, tokens: int) -> tuple[float, float, int]:
    body = {"model": "smollm2", "messages": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    stamps = []
    with httpx.stream("POST", url + "/chat/completions", json=body, timeout=300) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                stamps.append(time.perf_counter())
    n = len(stamps)
    return (n - 1) / (stamps[-1] - stamps[0]), n / (stamps[-1] - start), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    direct_runs = [direct(args.threads, args.tokens) for _ in range(args.runs)]

    fleet = (
        f"deployments:\n  smollm2: {{kind: llama-cpp, threads: {args.threads}}}\n"
        "routes:\n  smollm2: {deployments: [smollm2]}\n"
    )
    path = "/tmp/mf-engine-bench.yaml"
    with open(path, "w") as f:
        f.write(fleet)
    gw = subprocess.Popen([sys.executable, "-m", "modelfleet", "serve", "-f", path, "--port", "0"],
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = None
        for line in gw.stderr:
            if m := re.search(r"ready: OpenAI-compatible API at (\S+)", line):
                url = m.group(1)
                break
        assert url, "gateway did not start"
        through_gateway(url, 4)  # warm-up
        gw_runs = [through_gateway(url, args.tokens) for _ in range(args.runs)]
    finally:
        gw.terminate()
        gw.wait(30)

    d_dec = statistics.median(r[0] for r in direct_runs)
    g_dec = statistics.median(r[0] for r in gw_runs)
    d_e2e = statistics.median(r[1] for r in direct_runs)
    g_e2e = statistics.median(r[1] for r in gw_runs)
    print(
        f"threads={args.threads} tokens/run={direct_runs[0][2]} (direct) {gw_runs[0][2]} (modelfleet), "
        f"median of {args.runs}"
    )
    print(f"  llama-cpp-python direct : decode {d_dec:6.1f} tok/s   end-to-end {d_e2e:6.1f} tok/s")
    print(f"  through modelfleet      : decode {g_dec:6.1f} tok/s   end-to-end {g_e2e:6.1f} tok/s")
    print(
        f"  ratio                   : decode {g_dec / d_dec:.3f}x         "
        f"end-to-end {g_e2e / d_e2e:.3f}x (target >= 0.95x)"
    )


if __name__ == "__main__":
    main()
