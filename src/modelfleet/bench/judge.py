"""Pairwise LLM-as-judge, MT-Bench style, judged in both orders to cancel position bias.

For each prompt the judge sees the two answers twice, A/B then B/A, and answers [[A]], [[B]] or [[C]]
(tie). The candidate wins only when both orders prefer it; any disagreement or unreadable verdict is a tie.
win_rate_adjusted = (wins + 0.5 * ties) / n, with a bootstrap interval over prompts.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

JUDGE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. Choose the assistant that follows the user's "
    "instructions and answers the question better. Consider helpfulness, relevance, accuracy and detail. "
    "Do not let the order of the responses, their length or the assistants' names influence you. "
    'After a short explanation, output your final verdict strictly in this format: "[[A]]" if assistant '
    'A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


def judge_prompt(question: str, first: str, second: str) -> list[dict[str, str]]:
    user = (
        f"[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{first}\n"
        f"[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{second}\n"
        "[The End of Assistant B's Answer]"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
    found = _VERDICT.findall(text or "")
    return found[-1] if found else None


def outcome(forward: str | None, backward: str | None) -> str:
    """From the candidate's side: forward shows (baseline=A, candidate=B), backward the reverse."""
    if forward == "B" and backward == "A":
        return "win"
    if forward == "A" and backward == "B":
        return "loss"
    return "tie"


@dataclass
class JudgeResult:
    wins: int
    ties: int
    losses: int
    unreadable: int
    win_rate_adjusted: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_outcomes(cls, outcomes: list[str], unreadable: int, *, reps: int = 2000, seed: int = 0) -> JudgeResult:
        scores = np.asarray([{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes])
        n = len(scores)
        if n == 0:
            return cls(0, 0, 0, unreadable, float("nan"), float("nan"), float("nan"))
        rng = np.random.default_rng(seed)
        draws = scores[rng.integers(0, n, size=(reps, n))].mean(axis=1)  # prompts are independent: plain bootstrap
        low, high = np.percentile(draws, [2.5, 97.5])
        return cls(
            outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss"), unreadable,
            float(scores.mean()), float(low), float(high),
        )  # fmt: skip


async def judge(
    url: str,
    model: str,
    items: list[tuple[str, str, str]],
    *,
    api_key: str | None = None,
    concurrency: int = 4,
    max_tokens: int = 256,
) -> tuple[list[str], int]:
    """items: (question, baseline answer, candidate answer). Returns outcomes and the unreadable count."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def ask(question: str, first: str, second: str) -> str | None:
            body: dict[str, Any] = {
                "model": model, "messages": judge_prompt(question, first, second),
                "temperature": 0, "max_tokens": max_tokens,
            }  # fmt: skip
            async with slots, session.post(url.rstrip("/") + "/chat/completions", json=body) as resp:
                doc = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"judge answered HTTP {resp.status}: {doc}")
            return parse_verdict(doc["choices"][0]["message"]["content"])

        async def both(question: str, base: str, cand: str) -> tuple[str | None, str | None]:
            return await asyncio.gather(ask(question, base, cand), ask(question, cand, base))

        verdicts = await asyncio.gather(*(both(*item) for item in items))
    unreadable = sum(1 for f, b in verdicts if f is None or b is None)
    return [outcome(f, b) for f, b in verdicts], unreadable
