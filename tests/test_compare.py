"""bench compare: intervals that cover the truth, verdicts, A/B by variant, the pairwise judge."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import PY, Gateway, Upstream, bench_run, write_fleet

from modelfleet.bench.compare import STATS, Arm, compare, diff_ci
from modelfleet.bench.judge import JudgeResult, outcome, parse_verdict


def ar1(rng, n: int, mean: float, phi: float = 0.8, sd: float = 0.02) -> np.ndarray:
    """Autocorrelated latencies, as under load: each request resembles the one before."""
    noise = np.empty(n)
    noise[0] = rng.normal(0, sd)
    for i in range(1, n):
        noise[i] = phi * noise[i - 1] + rng.normal(0, sd * np.sqrt(1 - phi**2))
    return mean + noise


def test_block_bootstrap_interval_covers_the_true_difference():
    rng = np.random.default_rng(1)
    covered = 0
    trials = 60
    for t in range(trials):
        base, cand = ar1(rng, 400, 0.200), ar1(rng, 400, 0.230)  # true difference of means: 30 ms
        _, low, high, method = diff_ci([base], [cand], STATS["mean"], reps=400, seed=t)
        covered += low <= 0.030 <= high
    assert method == "block bootstrap"
    assert covered / trials >= 0.85  # nominal 95%; per-request resampling covers far less here


def test_whole_run_replicates_give_throughput_a_ci():
    def run(n_ok: int, dur: float) -> list[dict]:
        return [{"start": i, "status": 200, "error": None, "ttft": 0.1, "tpot": 0.01, "e2el": 0.5, "passed": True}
                for i in range(n_ok)]  # fmt: skip

    base = Arm("base", [run(100, 10.0), run(102, 10.0), run(98, 10.0)], [10.0, 10.0, 10.0])
    cand = Arm("cand", [run(150, 10.0), run(148, 10.0), run(152, 10.0)], [10.0, 10.0, 10.0])
    rows = {r["metric"]: r for r in compare(base, cand, reps=500)}
    thr = rows["throughput (req/s)"]
    assert thr["delta"] == pytest.approx(5.0) and thr["verdict"] == "better"
    assert thr["ci_low"] > 0 and "run bootstrap (3 vs 3 runs)" in thr["method"]
    assert rows["ttft p50 (ms)"]["verdict"] == "no clear difference"


def test_judge_counts_a_win_only_when_both_orders_agree():
    assert parse_verdict("A is more precise. [[A]]") == "A"
    assert parse_verdict("no verdict") is None
    assert outcome("B", "A") == "win" and outcome("A", "B") == "loss"
    assert outcome("A", "A") == "tie"  # position bias: each order prefers the first answer
    res = JudgeResult.from_outcomes(["win"] * 30 + ["tie"] * 10 + ["loss"] * 10, unreadable=0)
    assert res.win_rate_adjusted == pytest.approx(0.7)
    assert res.ci_low < 0.7 < res.ci_high and res.ci_low > 0.5


def test_compare_cli_on_two_runs_and_a_position_biased_judge(tmp_path, start):
    fast = start(Upstream, "--delay", "0.02", "--chunks", "4")
    slow = start(Upstream, "--delay", "0.12", "--chunks", "4")
    judge = start(Upstream, "--reply", "Both are fine, but the first is better. [[A]]")
    a = bench_run(tmp_path / "a", fast.url, "m", "-n", "30", "-c", "3")
    b = bench_run(tmp_path / "b", slow.url, "m", "-n", "30", "-c", "3")
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = tmp_path / "cmp.json"
    done = subprocess.run(
        [PY, "-m", "modelfleet", "bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
         "--judge-url", judge.url, "--judge-model", "judge", "--reps", "500", "-o", str(out),
         "--markdown", str(tmp_path / "cmp.md")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["metric"]: r for r in json.loads(out.read_text())["candidates"][str(tmp_path / "b.json")]["rows"]}
    ttft = rows["ttft p50 (ms)"]
    assert ttft["verdict"] == "worse" and 80 < ttft["delta"] < 130 and ttft["ci_low"] > 0
    judged = json.loads(out.read_text())["candidates"][str(tmp_path / "b.json")]["judge"]
    # A judge that always says [[A]] prefers whatever comes first: both orders disagree, so every prompt ties.
    assert (judged["ties"], judged["wins"], judged["losses"], judged["unreadable"]) == (10, 0, 0, 0)
    assert "| ttft p50 (ms) |" in (tmp_path / "cmp.md").read_text()


def test_ab_route_compared_by_variant(tmp_path, start):
    lora_a = start(Upstream, "--delay", "0.01", "--chunks", "4")
    lora_b = start(Upstream, "--delay", "0.08", "--chunks", "4")
    fleet = write_fleet(
        tmp_path,
        f"""\
deployments:
  lora-a: {{kind: openai, urls: ['{lora_a.url}']}}
  lora-b: {{kind: openai, urls: ['{lora_b.url}']}}
routes:
  chat: {{deployments: {{lora-a: 80, lora-b: 20}}}}
""",
    )
    gw = start(Gateway, fleet)
    doc = bench_run(tmp_path, gw.url, "chat", "-n", "100", "-c", "4")
    variants = [r["variant"] for r in doc["requests"]]
    assert 60 <= variants.count("lora-a") <= 95 and variants.count("lora-a") + variants.count("lora-b") == 100
    (tmp_path / "ab.json").write_text(json.dumps(doc))
    done = subprocess.run(
        [PY, "-m", "modelfleet", "bench", "compare", "--by-variant", str(tmp_path / "ab.json"), "--reps", "500",
         "-o", str(tmp_path / "cmp.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "cmp.json").read_text())
    assert report["baseline"] == "lora-a"
    rows = {r["metric"]: r for r in report["candidates"]["lora-b"]["rows"]}
    assert rows["ttft p50 (ms)"]["verdict"] == "worse"


@pytest.mark.parametrize(("better", "wins", "losses"), [("candidate", 10, 0), ("baseline", 0, 10)])
def test_the_judge_finds_real_wins_and_losses(tmp_path, start, better, wins, losses):
    base = start(Upstream, "--chunks", "3", "--reply", "Paris is the capital.")
    cand = start(Upstream, "--chunks", "3", "--reply", "The capital of France is Paris.")
    # This judge reads the answers: it prefers the one that names France, in whichever position it stands.
    good = "The capital of France" if better == "candidate" else "Paris is the capital"
    judge = start(Upstream, "--reply-when", f"A's Answer]\n{good}=[[A]]", "--reply", "[[B]]")
    for name, up in (("a", base), ("b", cand)):
        (tmp_path / f"{name}.json").write_text(json.dumps(bench_run(tmp_path / name, up.url, "m", "-n", "10")))
    out = tmp_path / "cmp.json"
    done = subprocess.run(
        [PY, "-m", "modelfleet", "bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
         "--judge-url", judge.url, "--judge-model", "judge", "--reps", "300", "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    judged = json.loads(out.read_text())["candidates"][str(tmp_path / "b.json")]["judge"]
    assert (judged["wins"], judged["losses"], judged["ties"]) == (wins, losses, 0)
    assert judged["win_rate_adjusted"] == pytest.approx(wins / 10)
