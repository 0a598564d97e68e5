"""Chargeback: each deployment's cost, day by day, split across teams by the tokens each used.

The ledger counts tokens per UTC day, team and deployment. On a day a deployment served tokens, its
cost that day is split by token share; on a day it ran and served nobody, the cost is idle capacity
no team used. So the teams' shares and the idle cost add up to the deployment's cost, exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.config.schema import Fleet, Schedule
from modelfleet.cost.hours import Hours, running_intervals
from modelfleet.cost.model import deployment_cost
from modelfleet.cost.prices import PriceTable

IDLE = "(idle)"
MAX_DAYS = 400


def chargeback(
    fleet: Fleet, usage: list[dict[str, Any]], start: datetime, end: datetime, prices: PriceTable
) -> dict[str, Any]:
    """`usage`: ledger rows with day, team, deployment and total_tokens (the admin API's `by=day,team,deployment`)."""
    tokens: dict[tuple[str, str], dict[str, int]] = {}  # (deployment, day) -> team -> tokens
    for row in usage:
        per_team = tokens.setdefault((row["deployment"], row["day"]), {})
        per_team[row["team"]] = per_team.get(row["team"], 0) + int(row["total_tokens"])
    rows: list[dict[str, Any]] = []
    deployments: list[dict[str, Any]] = []
    read: dict[Schedule | None, list[tuple[datetime, datetime]]] = {}  # deployments often share a schedule
    for name in fleet.deployments:
        total = 0.0
        shares: dict[str, list[float]] = {}  # team -> [usd, tokens]
        day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        # Each schedule is read once for the whole window, then cut into days: a year is 365 cuts, not 365 reads.
        schedule = fleet.deployments[name].schedule
        if schedule not in read:
            read[schedule] = running_intervals(schedule, start, end)
        windows = read[schedule]
        hours = sum((y - x).total_seconds() / 3600 for x, y in windows)
        cost = deployment_cost(fleet, name, start, end, prices, Hours(hours, hours, hours))
        note = cost.note
        first = 0  # windows are in order: each day looks only at those from the first one still running
        while day < end:
            a, b = max(day, start), min(day + timedelta(days=1), end)
            while first < len(windows) and windows[first][1] <= a:
                first += 1
            hours = 0.0
            for x, y in windows[first:]:
                if x >= b:
                    break
                hours += (min(b, y) - max(a, x)).total_seconds() / 3600
            usd = cost.usd(hours)
            total += usd
            used = tokens.get((name, day.strftime("%Y-%m-%d")), {})
            spent = sum(used.values())
            if spent:
                for team, n in used.items():
                    s = shares.setdefault(team, [0.0, 0])
                    s[0] += usd * n / spent
                    s[1] += n
            else:
                shares.setdefault(IDLE, [0.0, 0])[0] += usd
            day += timedelta(days=1)
        deployments.append({"deployment": name, "usd": round(total, 6), "note": note})
        for team, (team_usd, team_tokens) in sorted(shares.items()):
            rows.append(
                {
                    "deployment": name,
                    "team": team,
                    "tokens": int(team_tokens),
                    "usd": round(team_usd, 6),
                    "share": round(team_usd / total, 6) if total else 0.0,
                }
            )
    teams: dict[str, dict[str, float]] = {}
    for r in rows:
        t = teams.setdefault(r["team"], {"usd": 0.0, "tokens": 0})
        t["usd"] = round(t["usd"] + r["usd"], 6)
        t["tokens"] += r["tokens"]
    return {
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "prices": {"source": prices.source, "as_of": prices.as_of},
        "deployments": deployments,
        "rows": rows,
        "teams": teams,
    }


def window(since: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """`30d`, `2w` or a date -> [the first UTC day the ledger includes, now)."""
    from modelfleet.access.admin import since_day
    from modelfleet.errors import InvalidRequest

    now = now or datetime.now(UTC)
    first = datetime.strptime(since_day(since, now.timestamp()), "%Y-%m-%d").replace(tzinfo=UTC)
    if (now - first).days > MAX_DAYS:  # each day is priced from the schedules: bound the work
        raise InvalidRequest(f"since: chargeback covers at most {MAX_DAYS} days; got {since!r}", param="since")
    return first, now
