"""The hours a schedule keeps a deployment running between two moments, from its cron windows.

Crons are read as wall-clock times in the schedule's timezone (as the control plane acts on them),
then turned into real instants, so a night across a DST change is an hour shorter or longer. An idle
stop makes the hours a range: at least `idle_stop_after` of every window (it stops once idle), at
most the whole window (it is never idle). Wakes outside the windows are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from modelfleet.config.schema import Schedule


@dataclass(frozen=True, slots=True)
class Hours:
    always_on: float  # the whole period
    most: float  # the schedule's windows, never idle-stopped
    least: float  # each window cut to idle_stop_after (== most without an idle stop)


def _boundaries(schedule: Schedule, start: datetime, end: datetime) -> list[tuple[datetime, bool]]:
    """(instant, running?) for every boundary in [start, end), plus the latest one before `start`."""
    # Everything in UTC: aware datetimes sharing one tzinfo subtract as wall-clock times, DST ignored.
    tz = ZoneInfo(schedule.timezone)
    out: list[tuple[datetime, bool]] = []
    before: list[tuple[datetime, bool]] = []
    for running, cron in ((True, schedule.start), (False, schedule.stop)):
        if cron is None:
            continue
        local = start.astimezone(tz).replace(tzinfo=None)
        prev = croniter(cron, local + timedelta(microseconds=1)).get_prev(datetime)
        before.append((prev.replace(tzinfo=tz).astimezone(UTC), running))
        it = croniter(cron, local - timedelta(microseconds=1))
        while True:
            at = it.get_next(datetime).replace(tzinfo=tz).astimezone(UTC)  # wall clock; fold=0 when ambiguous
            if at >= end:
                break
            if at >= start:
                out.append((at, running))
    out.sort()
    latest = max(before) if before else (start, True)
    return [(start, latest[1]), *out]


def running_intervals(schedule: Schedule | None, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The windows in [start, end) in which the schedule keeps the deployment running."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if schedule is None or (schedule.start is None and schedule.stop is None):
        return [(start, end)]
    windows: list[tuple[datetime, datetime]] = []
    opened: datetime | None = None
    for at, running in _boundaries(schedule, start, end):
        if running and opened is None:
            opened = at
        elif not running and opened is not None:
            if at > opened:
                windows.append((opened, at))
            opened = None
    if opened is not None and end > opened:
        windows.append((opened, end))
    return windows


def hours_between(schedule: Schedule | None, start: datetime, end: datetime) -> Hours:
    def h(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds() / 3600  # aware datetimes: real elapsed time, DST included

    start, end = start.astimezone(UTC), end.astimezone(UTC)
    windows = running_intervals(schedule, start, end)
    most = sum(h(a, b) for a, b in windows)
    idle = schedule.idle_stop_after / 3600 if schedule is not None and schedule.idle_stop_after else None
    least = most if idle is None else sum(min(h(a, b), idle) for a, b in windows)
    return Hours(always_on=h(start, end), most=most, least=least)
