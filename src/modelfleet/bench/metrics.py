"""Load-test metrics, defined exactly as vLLM's `vllm bench serve` defines them.

Per request, with `start` taken just before the POST:
- TTFT: time of the first SSE message whose `choices` is non-empty (content may be empty), minus start.
- ITL: the gaps between successive choice-bearing messages (per chunk, not per token).
- E2EL: time of the last choice-bearing message minus start (a trailing usage-only chunk is excluded).
- TPOT: (E2EL - TTFT) / (output tokens - 1), only when there is more than one output token.
- Output tokens: the server's `usage.completion_tokens`; where the server sends none, the chunks are
  counted locally and the record says so (`usage_from_server: false`).

Careful: guidellm's "TPOT" includes TTFT and its "ITL" is vLLM's TPOT; llmperf counts chunks as tokens.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    id: str
    start: float  # seconds since the run began
    status: int = 0
    error: str | None = None
    ttft: float | None = None
    e2el: float | None = None
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    usage_from_server: bool = False
    passed: bool = False  # status 2xx, non-empty output, and every configured check
    variant: str | None = None  # the deployment that served it (X-Modelfleet-Deployment)
    prompt_id: str | None = None
    question: str = ""  # the last user message, for judging
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and 200 <= self.status < 300

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2el is None or self.output_tokens <= 1:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tpot": self.tpot}


def apply_timeline(record: RequestRecord, start: float, events: list[tuple[float, dict[str, Any]]]) -> None:
    """Fill TTFT, ITL, E2EL and token counts from (arrival time, parsed SSE message) pairs."""
    stamps = [t for t, msg in events if msg.get("choices")]
    if stamps:
        record.ttft = stamps[0] - start
        record.e2el = stamps[-1] - start
        record.itl = [b - a for a, b in itertools.pairwise(stamps)]
    usage = next((msg["usage"] for _, msg in reversed(events) if msg.get("usage")), None)
    if usage:
        record.output_tokens = int(usage.get("completion_tokens") or 0)
        record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        record.usage_from_server = True
    else:
        record.output_tokens = sum(1 for _, msg in events if _has_content(msg))


def _has_content(msg: dict[str, Any]) -> bool:
    for choice in msg.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or choice.get("text"):
            return True
    return False


@dataclass(frozen=True)
class SLO:
    ttft: float | None = None
    tpot: float | None = None
    e2el: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> SLO:
        """`ttft=500ms,tpot=50ms,e2el=10s` (units ms or s; bare numbers are milliseconds, like vLLM)."""
        if not text:
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            name, _, raw = part.partition("=")
            name, raw = name.strip().lower(), raw.strip().lower()
            if name not in ("ttft", "tpot", "e2el") or not raw:
                raise ValueError(f"unknown SLO {part!r}; expected ttft=, tpot= or e2el= such as ttft=500ms")
            scale = 1.0 if raw.endswith("s") and not raw.endswith("ms") else 0.001
            values[name] = float(raw.removesuffix("ms").removesuffix("s")) * scale
        return cls(**values)

    def met(self, r: RequestRecord) -> bool:
        if not r.passed:
            return False
        checks = ((self.ttft, r.ttft), (self.tpot, r.tpot), (self.e2el, r.e2el))
        return all(limit is None or (value is not None and value <= limit) for limit, value in checks)


def distribution(values: list[float], percentiles: tuple[int, ...] = (50, 90, 95, 99)) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    out = {"mean": statistics.fmean(ordered), "std": statistics.pstdev(ordered), "min": ordered[0], "max": ordered[-1]}
    for p in percentiles:
        out[f"p{p}"] = _percentile(ordered, p)
    return out


def _percentile(ordered: list[float], p: float) -> float:
    # Linear interpolation between closest ranks (numpy's default), as vLLM reports.
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(records: list[RequestRecord], duration: float, slo: SLO | None = None) -> dict[str, Any]:
    done = [r for r in records if r.ok]
    passed = [r for r in records if r.passed]
    out_tokens = sum(r.output_tokens for r in done)
    summary: dict[str, Any] = {
        "requests": len(records),
        "completed": len(done),
        "failed": len(records) - len(done),
        "pass_rate": len(passed) / len(records) if records else 0.0,
        "duration_s": duration,
        "request_throughput": len(done) / duration if duration > 0 else 0.0,
        "output_token_throughput": out_tokens / duration if duration > 0 else 0.0,
        "output_tokens": out_tokens,
        "usage_from_server": all(r.usage_from_server for r in done) if done else None,
        "ttft_s": distribution([r.ttft for r in done if r.ttft is not None]),
        "tpot_s": distribution([t for r in done if (t := r.tpot) is not None]),
        "itl_s": distribution([g for r in done for g in r.itl]),
        "e2el_s": distribution([r.e2el for r in done if r.e2el is not None]),
    }
    if slo is not None and (slo.ttft or slo.tpot or slo.e2el):
        good = sum(1 for r in records if slo.met(r))
        summary["goodput"] = good / duration if duration > 0 else 0.0
        summary["slo_attainment"] = good / len(records) if records else 0.0
    return summary
