"""The gate every API request passes: who is it (401), may it use this route (403), is it within its
limits (429); and, when it is done, what it used.

    authenticate -> allow(route) -> admit(tokens reserved) -> ... the request ... -> finish(usage)

In open mode (no team exists) every step is skipped but `finish`, which still keeps the usage ledger.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

from modelfleet.access.directory import Caller, Directory
from modelfleet.errors import Forbidden, InvalidRequest, RateLimited
from modelfleet.state.counters import Counters, Verdict
from modelfleet.state.usage import UsageLedger

OPEN_TEAM = "-"  # usage of open mode (no teams) is booked here
# Reserved for a request without max_tokens, and then set as its max_tokens: a reservation must
# bound the answer, or concurrent requests could overshoot a budget.
DEFAULT_RESERVATION = 1024
_MESSAGES = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
    "concurrency": "requests in flight",
    "tokens_per_day": "tokens per day (UTC)",
    "tokens_per_month": "tokens per month (UTC)",
}


class Gate:
    def __init__(self, directory: Directory, counters: Counters, ledger: UsageLedger) -> None:
        self.directory = directory
        self.counters = counters
        self.ledger = ledger
        # Admission leases are named here, never after a client's header: a shared X-Request-ID must not
        # share (or free) another request's concurrency slot. Unique across gateways sharing Redis.
        prefix = os.urandom(6).hex()
        self._leases = (f"{prefix}:{n}" for n in itertools.count())
        self.refused: dict[tuple[str, ...], int] = {}  # {(team, limit): 429s}, for /metrics

    async def authenticate(self, authorization: str | None) -> Caller | None:
        if not self.directory.enforcing:
            return None
        return await self.directory.authenticate(authorization)

    def routes_for(self, caller: Caller | None, routes: list[str]) -> list[str]:
        return routes if caller is None else [r for r in routes if caller.may_use(r)]

    def allow(self, caller: Caller, route: str) -> None:
        if not caller.may_use(route):
            mine = ", ".join(sorted(caller.routes or ()))
            raise Forbidden(f"team {caller.team!r} may not use route {route!r}; its routes: {mine}", param="model")

    async def admit(self, caller: Caller, body: dict[str, Any], body_bytes: int, generates: bool) -> Verdict:
        limits = caller.limits
        tokens = 0
        if limits.tokens:
            # A JSON body has well over 3 bytes per prompt token: an over-estimate, settled later.
            tokens = body_bytes // 3
            if generates:  # embeddings produce no tokens to bound
                asked = body.get("max_completion_tokens") or body.get("max_tokens")
                if not isinstance(asked, int):
                    asked = DEFAULT_RESERVATION
                    body["max_tokens"] = asked
                choices = max(body.get("n") or 1, body.get("best_of") or 1)  # each choice generates its own
                tokens += asked * (choices if isinstance(choices, int) else 1)
        _fits(caller, tokens)
        verdict = await self.counters.admit(caller.team, limits, tokens, next(self._leases))
        if not verdict.ok:
            key = (caller.team, verdict.limit)
            self.refused[key] = self.refused.get(key, 0) + 1
            raise _refusal(caller, verdict)
        return verdict

    def headers(self, caller: Caller, verdict: Verdict) -> dict[str, str]:
        return _ratelimit_headers(caller, verdict)

    def finish(self, caller: Caller | None, verdict: Verdict | None, route: str, deployment: str, variant: str,
               status: int, prompt: int, completion: int) -> None:  # fmt: skip
        if verdict is not None and caller is not None:
            self.counters.settle(caller.team, caller.limits, verdict, prompt + completion)
        # A limited team's 429 without a verdict is admit's refusal (an admitted request has one): not an upstream's.
        refused = status == 429 and verdict is None and caller is not None and caller.limited
        self.ledger.record(caller.team if caller else OPEN_TEAM, route, deployment, variant, status == 200, prompt,
                           completion, refused)  # fmt: skip


def _fits(caller: Caller, tokens: int) -> None:
    """A request bigger than a whole window or budget can never be admitted: say so, not "retry in 32s"."""
    for name in ("tpm", "tokens_per_day", "tokens_per_month"):
        limit = getattr(caller.limits, name)
        if limit and tokens > limit:
            raise InvalidRequest(
                f"this request reserves {tokens} tokens (its prompt, estimated, plus max_tokens), more than team "
                f"{caller.team!r}'s whole limit of {limit} {_MESSAGES[name]} (limits.{name}); it can never be "
                "admitted: lower max_tokens or shorten the prompt",
                param="max_tokens", code="exceeds_limit",
            )  # fmt: skip


def _ratelimit_headers(caller: Caller, v: Verdict) -> dict[str, str]:
    """OpenAI's x-ratelimit-* names, so existing client back-off logic works unchanged."""
    limits = caller.limits
    h: dict[str, str] = {}
    if limits.rpm:
        h["x-ratelimit-limit-requests"] = str(limits.rpm)
        if v.remaining_requests is not None:
            h["x-ratelimit-remaining-requests"] = str(v.remaining_requests)
    token_limit = limits.tpm or limits.tokens_per_day or limits.tokens_per_month
    if token_limit:
        h["x-ratelimit-limit-tokens"] = str(token_limit)
        if v.remaining_tokens is not None:
            h["x-ratelimit-remaining-tokens"] = str(v.remaining_tokens)
    if not v.ok:
        reset = f"{math.ceil(v.retry_after)}s"
        h["x-ratelimit-reset-requests" if v.limit in ("rpm", "concurrency") else "x-ratelimit-reset-tokens"] = reset
    return h


def _refusal(caller: Caller, v: Verdict) -> RateLimited:
    limit = getattr(caller.limits, v.limit)
    wait = math.ceil(v.retry_after)
    budget = v.limit.startswith("tokens_per_")
    err = RateLimited(
        f"team {caller.team!r} reached its limit of {limit} {_MESSAGES[v.limit]} (limits.{v.limit}); "
        f"retry in {wait}s" + (" when the budget renews" if budget else ""),
        code="insufficient_quota" if budget else "rate_limit_exceeded",
        headers={"Retry-After": str(wait), **_ratelimit_headers(caller, v)},
    )
    return err
