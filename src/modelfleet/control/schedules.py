"""Schedules, as pure functions of (schedule, time): what state a deployment should be in, and why.

    start: "0 7 * * MON-FRI"    stop: "0 18 * * MON-FRI"    timezone: Europe/Berlin    idle_stop_after: 30m

A schedule acts at its boundaries: when a start or stop time passes, the deployment is set to run or
to stop. Between boundaries, a person (`modelfleet deployments start|stop`) or a request (wake) may
change it, and idle time may stop it; the next boundary sets it again. Nothing here reads a clock:
callers pass `now`, so tests drive time by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from modelfleet.config.schema import Schedule

State = Literal["running", "stopped"]


@dataclass(frozen=True, slots=True)
class Desired:
    state: State
    reason: str
    since: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class Window:
    """What the schedule says at one moment: the state of the current window and when it ends."""

    state: State | None  # None: the schedule has no boundaries
    reason: str
    until: datetime | None


def _local(now: float, schedule: Schedule) -> datetime:
    return datetime.fromtimestamp(now, ZoneInfo(schedule.timezone))


def _fires(schedule: Schedule) -> list[tuple[State, str]]:
    out: list[tuple[State, str]] = []
    if schedule.start:
        out.append(("running", schedule.start))
    if schedule.stop:
        out.append(("stopped", schedule.stop))
    return out


def window(schedule: Schedule | None, now: float) -> Window:
    """The window `now` falls in: the state set by the latest boundary at or before `now`."""
    if schedule is None or not _fires(schedule):
        return Window(None, "", None)
    local = _local(now + 1e-6, schedule)  # a boundary at exactly `now` has fired
    latest = max(((croniter(cron, local).get_prev(datetime), state, cron) for state, cron in _fires(schedule)))
    nexts = [croniter(cron, local).get_next(datetime) for _, cron in _fires(schedule)]
    at, state, cron = latest
    word = "start" if state == "running" else "stop"
    return Window(state, f"schedule {word} {cron!r} ({schedule.timezone}) at {at:%a %H:%M}", min(nexts))


def boundaries(schedule: Schedule, start: datetime, end: datetime) -> list[tuple[datetime, State | None]]:
    """The state in force at `start` (what `window` says), then every start and stop in [start, end), in UTC.

    Crons are read as wall-clock times in the schedule's timezone (as `window` reads them) and turned
    into real instants, so a night across a DST change is an hour shorter or longer; an ambiguous
    wall-clock time is its first occurrence. For the cost of a schedule (cost/hours.py)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    tz = ZoneInfo(schedule.timezone)
    marks: list[tuple[datetime, State | None]] = []
    for state, cron in _fires(schedule):
        # Naive wall-clock times: aware ones sharing one tzinfo would step over a DST change as if it were not there.
        it = croniter(cron, start.astimezone(tz).replace(tzinfo=None) - timedelta(microseconds=1))
        while (at := it.get_next(datetime).replace(tzinfo=tz).astimezone(UTC)) < end:
            if at >= start:
                marks.append((at, state))
    return [(start, window(schedule, start.timestamp()).state), *sorted(marks)]


def boundary_between(schedule: Schedule | None, after: float, now: float) -> Desired | None:
    """The last boundary in (after, now], if any: what it sets the deployment to."""
    if schedule is None or now <= after:
        return None
    w = window(schedule, now)
    if w.state is None:
        return None
    before = window(schedule, after)
    # A boundary fired if the window changed, or if the same kind fired again (e.g. two starts).
    if before.until is not None and before.until.timestamp() <= now:
        return Desired(w.state, w.reason, now)
    return None


def decide(
    *,
    schedule: Schedule | None,
    idle_stop_after: float | None,
    desired: Desired,
    last_checked: float,
    last_request: float | None,
    now: float,
) -> Desired:
    """The desired state after time moved from `last_checked` to `now`."""
    fired = boundary_between(schedule, last_checked, now)
    if fired is not None:
        return fired
    if desired.state == "running" and idle_stop_after:
        busy = max(desired.since, last_request or 0.0)
        if now - busy >= idle_stop_after:
            return Desired("stopped", f"idle for {_span(idle_stop_after)} (idle_stop_after)", now)
    return desired


def initial(schedule: Schedule | None, now: float) -> Desired:
    """Before anything was decided: the schedule's current window, or running."""
    w = window(schedule, now)
    if w.state is None:
        return Desired("running", "started with the gateway", now)
    return Desired(w.state, w.reason, now)


def in_off_hours(schedule: Schedule | None, now: float) -> Window | None:
    """The schedule's stop window `now` falls in, if it does."""
    w = window(schedule, now)
    return w if w.state == "stopped" else None


def _span(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds))).removeprefix("0:")
