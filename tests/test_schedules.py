"""Schedules and the deployment lifecycle, driven by an injected clock (no waiting for 18:00)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from modelfleet.config import parse_fleet
from modelfleet.config.schema import Schedule
from modelfleet.control import schedules
from modelfleet.control.deployments import Deployments
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.errors import Unavailable
from modelfleet.state import open_store
from modelfleet.values import Replica, ReplicaState

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = Schedule(start="0 7 * * MON-FRI", stop="0 18 * * MON-FRI", timezone="Europe/Berlin")


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN).timestamp()  # 23 Nov 2026 is a Monday


def test_the_window_follows_the_latest_boundary():
    assert schedules.window(OFFICE, at(23, 12)).state == "running"
    assert schedules.window(OFFICE, at(23, 19)).state == "stopped"
    assert schedules.window(OFFICE, at(28, 12)).state == "stopped"  # Saturday: Friday's 18:00 was last
    assert schedules.window(OFFICE, at(23, 7)).state == "running"  # at the boundary itself
    w = schedules.window(OFFICE, at(27, 19))  # Friday evening
    assert w.until == datetime(2026, 11, 30, 7, 0, tzinfo=BERLIN)
    assert schedules.window(None, at(23, 12)).state is None


def test_a_boundary_sets_the_state_and_a_person_holds_until_the_next_one():
    morning = schedules.initial(OFFICE, at(23, 6))
    assert morning.state == "stopped"
    started = schedules.decide(schedule=OFFICE, idle_stop_after=None, desired=morning, last_checked=at(23, 6),
                               last_request=None, now=at(23, 7, 1))  # fmt: skip
    assert started.state == "running" and "start '0 7 * * MON-FRI'" in started.reason
    manual = schedules.Desired("stopped", "stop by the admin API", at(23, 9))
    held = schedules.decide(schedule=OFFICE, idle_stop_after=None, desired=manual, last_checked=at(23, 9),
                            last_request=None, now=at(23, 17))  # fmt: skip
    assert held is manual  # no boundary between 9:00 and 17:00
    evening = schedules.decide(schedule=OFFICE, idle_stop_after=None, desired=started, last_checked=at(23, 17),
                               last_request=None, now=at(23, 18, 1))  # fmt: skip
    assert evening.state == "stopped"


def test_idle_stop_counts_from_the_last_request():
    running = schedules.Desired("running", "woken by a request", at(23, 20))
    kwargs = dict(schedule=None, idle_stop_after=1800.0, desired=running, last_checked=at(23, 20))
    assert schedules.decide(**kwargs, last_request=at(23, 20, 10), now=at(23, 20, 39)) is running
    idle = schedules.decide(**kwargs, last_request=at(23, 20, 10), now=at(23, 20, 40))
    assert idle.state == "stopped" and "idle for 30:00" in idle.reason


class FakePlatform:
    """Records what the lifecycle asked; marks replicas like a platform would (at once)."""

    managed = True

    def __init__(self, registry: ReplicaRegistry) -> None:
        self.registry = registry
        self.calls: list[str] = []
        self.fail_starts = 0  # the next this many starts fail, as AccessDenied would

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail_starts:
            self.fail_starts -= 1
            raise PermissionError("AccessDenied: not authorized to perform sagemaker:CreateEndpoint")
        self.registry.mark_all("office", ReplicaState.READY)

    async def stop(self) -> None:
        self.calls.append("stop")
        self.registry.mark_all("office", ReplicaState.STOPPED)

    async def shutdown(self) -> None:
        self.calls.append("shutdown")


FLEET = """\
deployments:
  office: {kind: openai, urls: [http://127.0.0.1:9/v1], wake_on_request: true,
           schedule: {start: "0 7 * * MON-FRI", stop: "0 18 * * MON-FRI", timezone: Europe/Berlin,
                      idle_stop_after: 30m, wake_off_hours: WAKE}}
routes:
  chat: {deployments: [office]}
"""


def lifecycle(tmp_path, clock, wake_off_hours=True):
    fleet = parse_fleet(FLEET.replace("WAKE", str(wake_off_hours).lower()), env={})
    registry = ReplicaRegistry()
    registry.add("office", [Replica("office", "office-0", "http://x/v1")])
    platform = FakePlatform(registry)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    d = Deployments(fleet, {"office": platform}, registry, store, clock=lambda: clock[0])
    registry.listen(d.replica_changed)
    return d, platform, registry.replicas


def test_the_lifecycle_follows_the_clock_wakes_once_and_persists(tmp_path):
    async def main():
        clock = [at(23, 17, 55)]
        d, platform, replicas = lifecycle(tmp_path, clock)
        await d.start()
        assert platform.calls == ["start"] and d.desired["office"].state == "running"
        clock[0] = at(
            23,
            18,
            0,
        )
        await d.tick()
        assert platform.calls[-1] == "stop" and replicas["office"][0].state is ReplicaState.STOPPED
        # Off hours, but wake_off_hours: three requests, one wake.
        assert [await d.wake("office") for _ in range(3)] == [60.0, 60.0, 60.0]
        await asyncio.sleep(0)
        assert platform.calls.count("start") == 2 and d.wakes.count == {"office": 1}
        assert len(d.wakes.seconds["office"]) == 1  # the platform marked it ready: the wake is over
        # No request for 30 minutes: idle stop.
        clock[0] = at(23, 18, 31)
        await d.tick()
        assert d.desired["office"].state == "stopped" and "idle" in d.desired["office"].reason
        await d.shutdown()
        # A new gateway resumes "stopped" and applies the morning boundary it slept through.
        clock[0] = at(24, 7, 30)
        d2, _, _ = lifecycle(tmp_path, clock)
        await d2.start()
        assert d2.desired["office"].state == "running" and "start '0 7" in d2.desired["office"].reason
        clock[0] = at(24, 8)
        await d2.set("office", "stop", "stop by the admin API")
        await d2.shutdown()
        d3, platform3, _ = lifecycle(tmp_path, clock)
        await d3.start()
        assert platform3.calls == ["stop"] and d3.desired["office"].reason == "stop by the admin API"
        await d3.shutdown()

    asyncio.run(main())


def test_wake_can_be_refused_in_off_hours_naming_the_schedule(tmp_path):
    async def main():
        clock = [at(23, 19)]
        d, platform, _ = lifecycle(tmp_path, clock, wake_off_hours=False)
        await d.start()
        assert platform.calls == ["stop"]
        with pytest.raises(Unavailable, match=r"stopped by its schedule until Tue 07:00 CET .*stop '0 18"):
            await d.wake("office")
        await d.shutdown()

    asyncio.run(main())


def test_a_failed_wake_is_reported_and_the_next_request_tries_again(tmp_path):
    async def main():
        clock = [at(23, 19)]
        d, platform, replicas = lifecycle(tmp_path, clock)
        await d.start()
        assert platform.calls == ["stop"]
        platform.fail_starts = 1
        assert await d.wake("office") == 60.0
        await asyncio.sleep(0.01)
        replica = replicas["office"][0]
        # Stopped again, saying why: waiting requests fail now instead of waiting out wake_timeout.
        assert replica.state is ReplicaState.STOPPED and "AccessDenied" in replica.reason
        status = {s["name"]: s for s in await d.status()}["office"]
        assert "AccessDenied" in status["error"] and status["desired"] == "stopped"
        # The next request wakes it again, and this time it works.
        await d.wake("office")
        await asyncio.sleep(0.01)
        assert platform.calls.count("start") == 2 and replica.state is ReplicaState.READY
        assert (await d.status())[0]["error"] is None and d.wakes.count == {"office": 2}
        await d.shutdown()

    asyncio.run(main())
