"""Limit counters: per team, requests and tokens per sliding minute, requests in flight, token budgets
per UTC day and month. `admit` checks every limit and, only if all pass, counts the request at once:
a burst cannot slip between the check and the count.

Token limits are reserved up front (the prompt estimate plus `max_tokens`) and `settle` corrects the
reservation to what the deployment reported, so concurrent requests cannot overshoot a budget.

Minute windows are 60 one-second buckets: "at most N in the last 60 seconds", exact to the second.
LocalCounters keeps them in this process; RedisCounters (redis_counters.py) runs the same arithmetic
in Redis, atomically, for every gateway at once.
"""

from __future__ import annotations

import calendar
import functools
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from modelfleet.config.schema import Limits

WINDOW = 60
LIMITS = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month")


@dataclass(slots=True)
class Verdict:
    ok: bool
    limit: str = ""  # the limit that refused: rpm, tpm, concurrency, tokens_per_day, tokens_per_month
    retry_after: float = 0.0
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    # What settle needs to undo or correct the admission.
    second: int = 0
    day: str = ""
    month: str = ""
    reserved: int = 0
    lease: str = ""


class Counters(Protocol):
    async def admit(self, team: str, limits: Limits, tokens: int, lease: str) -> Verdict: ...
    def settle(self, team: str, limits: Limits, verdict: Verdict, tokens: int) -> None:
        """Release the request's concurrency slot and correct its token reservation to `tokens`."""

    async def seed(self, team: str, day_tokens: int, month_tokens: int) -> None:
        """Budgets already spent (from the usage ledger) when counters start empty."""

    async def peek(self, team: str) -> dict[str, int]:
        """What `admit` would count against each limit now, reservations of requests in flight included:
        {rpm, tpm, concurrency, tokens_per_day, tokens_per_month}. Read-only; for the console, not per request."""

    async def aclose(self) -> None: ...


def periods(now: float) -> tuple[str, str, float, float]:
    """(day key, month key, seconds to the next UTC day, seconds to the next UTC month)."""
    return _periods(int(now))


@functools.lru_cache(maxsize=4)  # called per request; the answer changes once a second
def _periods(sec: int) -> tuple[str, str, float, float]:
    t = time.gmtime(sec)
    day_left = 86400 - (t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec)
    month_days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
    month_left = (month_days - t.tm_mday) * 86400 + day_left
    return time.strftime("%Y-%m-%d", t), time.strftime("%Y-%m", t), float(day_left), float(month_left)


class _Window:
    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()  # [second, count], oldest first
        self.total = 0

    def trim(self, sec: int) -> None:
        b = self.buckets
        while b and b[0][0] <= sec - WINDOW:
            self.total -= b.popleft()[1]

    def add(self, sec: int, n: int) -> None:
        b = self.buckets
        if b and b[-1][0] == sec:
            b[-1][1] += n
        else:
            b.append([sec, n])
        self.total += n

    def adjust(self, sec: int, delta: int) -> None:
        for bucket in reversed(self.buckets):
            if bucket[0] == sec:
                bucket[1] += delta
                self.total += delta
                return
            if bucket[0] < sec:
                return  # already out of the window

    def retry_after(self, now: float) -> float:
        return max(1.0, self.buckets[0][0] + WINDOW - now) if self.buckets else 1.0


class _TeamCounts:
    __slots__ = ("day", "day_used", "inflight", "month", "month_used", "requests", "tokens")

    def __init__(self) -> None:
        self.requests = _Window()
        self.tokens = _Window()
        self.inflight = 0
        self.day = self.month = ""
        self.day_used = self.month_used = 0


class LocalCounters:
    """Counters for one gateway process (the laptop default)."""

    def __init__(self) -> None:
        self._teams: dict[str, _TeamCounts] = {}

    def _counts(self, team: str) -> _TeamCounts:
        c = self._teams.get(team)
        if c is None:
            c = self._teams[team] = _TeamCounts()
        return c

    async def admit(self, team: str, limits: Limits, tokens: int, lease: str) -> Verdict:
        now = time.time()
        sec = int(now)
        c = self._counts(team)
        day, month, day_left, month_left = periods(now)
        if c.day != day:
            c.day, c.day_used = day, 0
        if c.month != month:
            c.month, c.month_used = month, 0
        if limits.concurrency and c.inflight >= limits.concurrency:
            return Verdict(False, "concurrency", 1.0)
        rem_req = rem_tok = None
        if limits.rpm:
            c.requests.trim(sec)
            if c.requests.total + 1 > limits.rpm:
                return Verdict(False, "rpm", c.requests.retry_after(now), 0)
            rem_req = limits.rpm - c.requests.total - 1
        if limits.tpm:
            c.tokens.trim(sec)
            if c.tokens.total + tokens > limits.tpm:
                return Verdict(False, "tpm", c.tokens.retry_after(now), rem_req, max(0, limits.tpm - c.tokens.total))
            rem_tok = limits.tpm - c.tokens.total - tokens
        for name, limit, used, left in (
            ("tokens_per_day", limits.tokens_per_day, c.day_used, day_left),
            ("tokens_per_month", limits.tokens_per_month, c.month_used, month_left),
        ):
            if limit:
                if used + tokens > limit:
                    return Verdict(False, name, left, rem_req, max(0, limit - used))
                rem_tok = limit - used - tokens if rem_tok is None else min(rem_tok, limit - used - tokens)
        # Every limit passed: count it all now.
        c.inflight += 1
        if limits.rpm:
            c.requests.add(sec, 1)
        if limits.tpm:
            c.tokens.add(sec, tokens)
        c.day_used += tokens
        c.month_used += tokens
        return Verdict(True, "", 0.0, rem_req, rem_tok, sec, day, month, tokens, lease)

    def settle(self, team: str, limits: Limits, verdict: Verdict, tokens: int) -> None:
        c = self._counts(team)
        c.inflight -= 1
        delta = tokens - verdict.reserved
        if delta:
            if limits.tpm:
                c.tokens.adjust(verdict.second, delta)
            if c.day == verdict.day:
                c.day_used += delta
            if c.month == verdict.month:
                c.month_used += delta

    async def seed(self, team: str, day_tokens: int, month_tokens: int) -> None:
        c = self._counts(team)
        c.day, c.month, *_ = periods(time.time())
        c.day_used, c.month_used = day_tokens, month_tokens

    async def peek(self, team: str) -> dict[str, int]:
        c = self._teams.get(team)
        if c is None:
            return dict.fromkeys(LIMITS, 0)
        now = time.time()
        day, month, _, _ = periods(now)
        c.requests.trim(int(now))  # what admit would trim first
        c.tokens.trim(int(now))
        return {
            "rpm": c.requests.total, "tpm": c.tokens.total, "concurrency": c.inflight,
            "tokens_per_day": c.day_used if c.day == day else 0,
            "tokens_per_month": c.month_used if c.month == month else 0,
        }  # fmt: skip

    async def aclose(self) -> None:
        return None
