"""The hours a schedule keeps a deployment running between two moments, from its cron windows.

The windows are the control plane's (control/schedules.py owns reading a schedule: its boundaries
in real instants, DST included); this module only adds up hours. An idle stop makes the hours a
range: at least `idle_stop_after` of every window (it stops once idle), at most the whole window
(it is never idle). Wakes outside the windows are not counted. A schedule with only a stop counts
as running up to each stop: nothing in it says when people or requests start it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise

from modelfleet.config.schema import Schedule
from modelfleet.control import schedules


@dataclass(frozen=True, slots=True)
class Hours:
    always_on: float  # the whole period
    most: float  # the schedule's windows, never idle-stopped
    least: float  # each window cut to idle_stop_after (== most without an idle stop)


def running_intervals(schedule: Schedule | None, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The windows in [start, end) in which the schedule keeps the deployment running."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if schedule is None or (schedule.start is None and schedule.stop is None):
        return [(start, end)]
    marks = schedules.boundaries(schedule, start, end)
    if schedule.start is None:
        # Only a stop: the schedule never starts it, people and requests do, at times no estimate can know.
        # It counts as running up to each stop (the most it can run, which a cost cap must assume); with an
        # idle stop, `least` is idle_stop_after of each stop-to-stop window.
        cuts = [start, *(at for at, _ in marks[1:] if at > start), end]
        return [(a, b) for a, b in pairwise(cuts) if b > a]
    windows: list[tuple[datetime, datetime]] = []
    opened: datetime | None = None
    for at, state in marks:
        if state == "running" and opened is None:
            opened = at
        elif state == "stopped" and opened is not None:
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
