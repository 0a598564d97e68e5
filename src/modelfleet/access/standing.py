"""A team's standing against its limits as the limiter sees it now: what its next request will meet.

Read from the same counters `admit` checks (state/counters.py), so the console's budget bars show what
will be enforced, the tokens reserved by requests still in flight included; the usage ledger only
learns of a request once it is done, and is written in batches.
"""

from __future__ import annotations

import time
from typing import Any

from modelfleet.access.directory import Caller
from modelfleet.state.counters import LIMITS, WINDOW, Counters, periods

PER = {"rpm": "minute", "tpm": "minute", "concurrency": "in flight", "tokens_per_day": "day (UTC)",
       "tokens_per_month": "month (UTC)"}  # fmt: skip


async def standing(counters: Counters, caller: Caller) -> dict[str, Any]:
    """{"team", "limits": {name: {limit, used, remaining, per, resets_in}}} for each limit the team has.

    `resets_in`: seconds until the day or month budget renews; a minute window slides (None: it frees
    as its oldest second leaves the window), and a slot in flight frees when its request ends."""
    used = await counters.peek(caller.team) if caller.limited else dict.fromkeys(LIMITS, 0)
    _, _, day_left, month_left = periods(time.time())
    resets = {"tokens_per_day": day_left, "tokens_per_month": month_left}
    limits: dict[str, Any] = {}
    for name in LIMITS:
        limit = getattr(caller.limits, name)
        if limit:
            limits[name] = {"limit": limit, "used": used[name], "remaining": max(0, limit - used[name]),
                            "per": PER[name], "resets_in": resets.get(name)}  # fmt: skip
    return {"team": caller.team, "window_seconds": WINDOW, "limits": limits}
