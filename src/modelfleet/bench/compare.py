"""Compare runs (or the variants inside one A/B run) with honest uncertainty.

Latencies within one run are autocorrelated under load (a slow patch slows every request in it), so
resampling single requests overstates precision. Here:
- one run per arm: a moving-block bootstrap over requests in start-time order, with the block length
  chosen from the data (Politis & White 2004, corrected by Patton, Politis & White 2009);
- several runs per arm (replicates): a bootstrap over whole runs, which also gives throughput a CI.
A verdict is given only when the 95% interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Stat = Callable[[np.ndarray], float]
STATS: dict[str, Stat] = {"mean": np.mean, "p50": np.median, "p90": lambda a: float(np.percentile(a, 90))}
METRICS = ("ttft", "tpot", "e2el")  # lower is better


@dataclass
class Arm:
    """One side of a comparison: the requests of one or more runs (replicates) of the same setup."""

    name: str
    runs: list[list[dict[str, Any]]]  # request records per run, each in start order
    durations: list[float]

    def values(self, metric: str) -> list[np.ndarray]:
        out = []
        for run in self.runs:
            vals = [r[metric] for r in run if r.get(metric) is not None and _ok(r)]
            out.append(np.asarray(vals, dtype=float))
        return out

    def passed(self) -> list[np.ndarray]:
        return [np.asarray([1.0 if r.get("passed") else 0.0 for r in run]) for run in self.runs]

    def throughput(self) -> list[float]:
        return [sum(1 for r in run if _ok(r)) / d for run, d in zip(self.runs, self.durations, strict=True)]


def _ok(r: dict[str, Any]) -> bool:
    return r.get("error") is None and 200 <= (r.get("status") or 0) < 300


def block_length(values: np.ndarray) -> int:
    """Politis-White automatic block length for a (circular) block bootstrap of the mean."""
    n = len(values)
    if n < 8:
        return 1
    x = values - values.mean()
    max_lag = min(n - 1, max(5, int(np.ceil(np.sqrt(n)))) + 5)
    acov = np.array([np.dot(x[: n - k], x[k:]) / n for k in range(max_lag + 1)])
    if acov[0] <= 0:
        return 1
    rho = acov / acov[0]
    # m: the first lag after which K_n autocorrelations in a row are insignificant.
    k_n = max(5, int(np.ceil(np.sqrt(np.log10(n)))))
    bound = 2.0 * np.sqrt(np.log10(n) / n)
    m = max_lag - k_n
    for lag in range(1, max_lag - k_n + 1):
        if np.all(np.abs(rho[lag : lag + k_n]) < bound):
            m = lag - 1
            break
    big_m = min(2 * max(m, 1), max_lag)
    lags = np.arange(-big_m, big_m + 1)
    t = np.abs(lags) / big_m
    window = np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2.0 * (1.0 - t), 0.0))  # flat-top lag window
    r = acov[np.abs(lags)]
    g = np.sum(window * np.abs(lags) * r)
    d = (4.0 / 3.0) * np.sum(window * r) ** 2
    if d <= 0 or g == 0:
        return 1
    b = (2.0 * g**2 / d) ** (1 / 3) * n ** (1 / 3)
    return int(min(max(1, round(b)), n // 3 or 1))


def block_bootstrap(values: np.ndarray, stat: Stat, rng: np.random.Generator, reps: int) -> np.ndarray:
    """Statistic of `reps` moving-block resamples of an ordered series."""
    n = len(values)
    if n == 0:
        return np.full(reps, np.nan)
    block = block_length(values)
    starts = rng.integers(0, n - block + 1, size=(reps, math.ceil(n / block)))
    idx = (starts[:, :, None] + np.arange(block)).reshape(reps, -1)[:, :n]
    sample = values[idx]
    return np.array([stat(row) for row in sample])


def diff_ci(
    base: list[np.ndarray], cand: list[np.ndarray], stat: Stat, *, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float, str]:
    """(point, low, high, method) for stat(candidate) - stat(baseline), 95% percentile interval."""
    rng = np.random.default_rng(seed)
    pooled_b, pooled_c = np.concatenate(base), np.concatenate(cand)
    if len(pooled_b) == 0 or len(pooled_c) == 0:
        return math.nan, math.nan, math.nan, "no data"
    point = float(stat(pooled_c) - stat(pooled_b))
    if len(base) > 1 and len(cand) > 1:  # whole-run replicates
        pick_b = rng.integers(0, len(base), size=(reps, len(base)))
        pick_c = rng.integers(0, len(cand), size=(reps, len(cand)))
        draws = np.array(
            [
                stat(np.concatenate([cand[i] for i in pc])) - stat(np.concatenate([base[i] for i in pb]))
                for pb, pc in zip(pick_b, pick_c, strict=True)
            ]
        )
        method = f"run bootstrap ({len(base)} vs {len(cand)} runs)"
    else:
        draws = block_bootstrap(pooled_c, stat, rng, reps) - block_bootstrap(pooled_b, stat, rng, reps)
        method = "block bootstrap"
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return point, float(low), float(high), method


def verdict(low: float, high: float, lower_is_better: bool = True) -> str:
    if math.isnan(low) or (low <= 0 <= high):
        return "no clear difference"
    better = high < 0 if lower_is_better else low > 0
    return "better" if better else "worse"


def compare(base: Arm, cand: Arm, *, reps: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for metric in METRICS:
        for stat_name in ("p50", "p90"):
            b, c = base.values(metric), cand.values(metric)
            point, low, high, method = diff_ci(b, c, STATS[stat_name], reps=reps, seed=seed)
            rows.append(
                {
                    "metric": f"{metric} {stat_name} (ms)", "baseline": _stat(b, stat_name) * 1000,
                    "candidate": _stat(c, stat_name) * 1000, "delta": point * 1000, "ci_low": low * 1000,
                    "ci_high": high * 1000, "method": method, "verdict": verdict(low, high),
                }
            )  # fmt: skip
    point, low, high, method = diff_ci(base.passed(), cand.passed(), STATS["mean"], reps=reps, seed=seed)
    rows.append(
        {
            "metric": "pass rate", "baseline": _stat(base.passed(), "mean"), "candidate": _stat(cand.passed(), "mean"),
            "delta": point, "ci_low": low, "ci_high": high, "method": method,
            "verdict": verdict(low, high, lower_is_better=False),
        }
    )  # fmt: skip
    tb, tc = base.throughput(), cand.throughput()
    row: dict[str, Any] = {
        "metric": "throughput (req/s)", "baseline": float(np.mean(tb)), "candidate": float(np.mean(tc)),
        "delta": float(np.mean(tc) - np.mean(tb)), "ci_low": math.nan, "ci_high": math.nan,
        "method": "needs replicates: pass several runs per side", "verdict": "no clear difference",
    }  # fmt: skip
    if len(tb) > 1 and len(tc) > 1:
        _, low, high, method = diff_ci([np.asarray([t]) for t in tb], [np.asarray([t]) for t in tc], STATS["mean"],
                                       reps=reps, seed=seed)  # fmt: skip
        row.update(ci_low=low, ci_high=high, method=method, verdict=verdict(low, high, lower_is_better=False))
    rows.append(row)
    return rows


def _stat(parts: list[np.ndarray], name: str) -> float:
    pooled = np.concatenate(parts) if parts else np.asarray([])
    return float(STATS[name](pooled)) if len(pooled) else math.nan


def arms_from_runs(docs_by_arm: dict[str, list[dict[str, Any]]]) -> list[Arm]:
    return [
        Arm(
            name,
            [sorted(d["requests"], key=lambda r: r["start"]) for d in docs],
            [d["summary"]["duration_s"] for d in docs],
        )
        for name, docs in docs_by_arm.items()
    ]


def arms_from_variants(doc: dict[str, Any]) -> list[Arm]:
    """Split one A/B run by the deployment that served each request."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(doc["requests"], key=lambda r: r["start"]):
        by_variant.setdefault(r.get("variant") or "unknown", []).append(r)
    duration = doc["summary"]["duration_s"]
    return [Arm(name, [reqs], [duration]) for name, reqs in sorted(by_variant.items(), key=lambda kv: -len(kv[1]))]
