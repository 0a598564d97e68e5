"""A hostile API server and racing gateway pods, against the fake Kubernetes API server over HTTP
(modelfleet.testing.fake_kube, with injected slow answers and errors), through the real client."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from test_kube_lease import control_plane, ticking
from test_kubernetes import FakeKube, until

from modelfleet.config import parse_fleet
from modelfleet.control.platforms.kube_api import KubeAPI
from modelfleet.control.platforms.kube_lease import LeaderLease
from modelfleet.values import ReplicaState


@pytest.fixture
def kube(start) -> FakeKube:
    return start(FakeKube)


def fault(kube: FakeKube, **spec) -> None:
    httpx.post(kube.url + "/fake/faults", json=spec).raise_for_status()


def lease_api(kube: FakeKube) -> KubeAPI:
    fleet = parse_fleet(f'deployments:\n  chat: {{kind: kubernetes, model: m, namespace: ml, api_url: "{kube.url}"}}\n'
                        "routes:\n  chat: {deployments: [chat]}\n", env={})  # fmt: skip
    return KubeAPI(fleet.deployments["chat"], "chat")


def test_a_renewal_landing_during_a_slow_get_is_aged_from_the_answer_not_the_question(kube):
    """No split brain: the observer's slow GET shows a renewal written mid-way; it must not date it from before."""
    d = 4.0

    async def main():
        a, b = LeaderLease(lease_api(kube), d, "a"), LeaderLease(lease_api(kube), d, "b")
        try:
            assert await a.step()
            fault(kube, method="GET", path="/leases/modelfleet-chat", delay=d / 2)  # b's next GET is slow
            asked = time.monotonic()
            observing = asyncio.create_task(b.step())
            await asyncio.sleep(0.3 * d)
            assert await a.step()  # a renews while b's GET is on its way: a leads until ~asked + 1.1d
            assert not await observing
            await asyncio.sleep(asked + d + 0.05 - time.monotonic())  # a stalls (no renewal); b looks again
            took = await b.step()
            assert not (took and a.leading), "two gateway pods hold the Lease at once"
        finally:
            await a.api.aclose()
            await b.api.aclose()

    asyncio.run(main())


def test_a_wake_from_a_follower_whose_clock_is_behind_still_reaches_the_holder(kube):
    """Pods' wall clocks differ: what a follower publishes is news because it was written later, whatever its time."""
    kube.seed("chat", replicas=0)

    async def main():
        clock, behind = [1_000_000.0], [1_000_000.0 - 1000]  # pod b's clock is slower than idle_stop_after
        a, _pa, _ = control_plane(kube, clock, wake_on_request="true", wake_timeout="3s")
        b, pb, reps_b = control_plane(kube, behind, wake_on_request="true", wake_timeout="3s")
        await a.start()
        await b.start()
        clock[0] += 1
        await a.set("chat", "stop", "test")
        await until(lambda: reps_b[0].state is ReplicaState.STOPPED)

        loop = ticking(a)
        try:
            await b.wake("chat")  # raised Unavailable: the holder took b's wake for an old one
            assert kube.deployment("chat")["spec"]["replicas"] == 1
            assert a.desired["chat"].state == "running"
            await a.tick()  # and not stopped as idle at once: the wake is dated by the holder's clock
            assert a.desired["chat"].state == "running" and kube.deployment("chat")["spec"]["replicas"] == 1
            # and a person's stop through the slow pod too
            await until(lambda: pb.published() is not None and pb.published().state == "running")
            await b.set("chat", "stop", "asked on the slow pod")
            await until(lambda: kube.deployment("chat")["spec"]["replicas"] == 0, timeout=5)
        finally:
            loop.cancel()
            await a.shutdown()
            await b.shutdown()

    asyncio.run(main())


def test_long_deployment_names_that_differ_near_their_end_get_their_own_leases(kube):
    """Two Deployments, two Leases: a shared one would elect a holder for only one of the two deployments."""
    long = "qwen2-5-72b-instruct-awq-tensor-parallel-4-team-quant-eval"
    fleet = parse_fleet(f"""\
deployments:
  {long}-a: {{kind: kubernetes, model: m, namespace: ml, api_url: "{kube.url}"}}
  {long}-b: {{kind: kubernetes, model: m, namespace: ml, api_url: "{kube.url}"}}
routes:
  r: {{deployments: [{long}-a, {long}-b]}}
""", env={})  # fmt: skip

    async def main():
        apis = [KubeAPI(fleet.deployments[n], n) for n in (f"{long}-a", f"{long}-b")]
        a, b = (LeaderLease(api, 2.0) for api in apis)
        try:
            assert apis[0].name != apis[1].name and apis[0].lease_name != apis[1].lease_name
            assert await a.step() and await b.step()  # each deployment has a holder
        finally:
            for api in apis:
                await api.aclose()

    asyncio.run(main())


def test_a_holder_whose_renewals_failed_still_hands_the_lease_on_at_shutdown(kube):
    """It stopped acting (could not renew), but the Lease still names it: shutdown empties it for the next pod."""

    async def main():
        a, b = LeaderLease(lease_api(kube), 1.0, "a"), LeaderLease(lease_api(kube), 1.0, "b")
        try:
            assert await a.step()
            fault(kube, method="PUT", path="/leases/modelfleet-chat", status=500)
            with pytest.raises(Exception, match="injected fault 500"):
                await a.step()
            await asyncio.sleep(0.9)  # past the renew deadline: a no longer leads
            assert not a.leading
            await a.release()
            assert await b.step()  # at once, not a whole lease duration later
        finally:
            await a.api.aclose()
            await b.api.aclose()

    asyncio.run(main())


def test_a_watch_hung_on_a_half_open_connection_is_abandoned_and_listed_again(kube):
    """The API server's answer never comes (a load balancer dropped the connection silently): list again anyway."""
    kube.seed("chat", replicas=0)
    fault(kube, method="GET", path="/deployments", watch=True, delay=120)  # the first watch hangs

    async def main():
        api = KubeAPI(lease_api(kube).dep, "chat", watch_seconds=1)
        views = []
        follow = asyncio.create_task(api.follow_deployment(views.append))
        try:
            await until(lambda: views)
            httpx.patch(f"{kube.url}/apis/apps/v1/namespaces/ml/deployments/chat/scale", json={"spec": {"replicas": 2}},
                        headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()  # fmt: skip
            await until(lambda: views[-1].replicas == 2, timeout=8)
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            await api.aclose()

    asyncio.run(main())


def test_a_wake_racing_the_holders_stop_is_not_overwritten_by_it(kube):
    """The holder stops the model; a follower sees it stopped and wakes it at once. The holder's own record of the
    stop goes on the Deployment before the stop, so it cannot land after the wake and erase it (a 503). (The
    holder's own 1s loop may also catch the wake while the slow write is on its way: this is the scenario, not
    a proof of the ordering.)"""
    kube.seed("chat", replicas=0)

    async def main():
        clock = [1_000_000.0]
        a, pa, _ = control_plane(kube, clock, wake_on_request="true", wake_timeout="3s")
        b, _pb, reps_b = control_plane(kube, clock, wake_on_request="true", wake_timeout="3s")
        await a.start()
        await b.start()
        assert pa.leading
        await until(lambda: reps_b[0].ready)

        loop = None
        try:
            clock[0] += 1
            fault(kube, method="PATCH", path="/deployments/chat", delay=1.0)  # the holder's annotation is slow
            stopping = asyncio.create_task(a.set("chat", "stop", "by a person"))
            await until(lambda: reps_b[0].state is ReplicaState.STOPPED)
            clock[0] += 1
            waking = asyncio.create_task(b.wake("chat"))
            await stopping  # the holder's next tick comes after its stop (ticks do not overlap a person's stop)
            loop = ticking(a)
            await waking  # raised Unavailable: the stop's late annotation erased the wake
            await until(lambda: kube.deployment("chat")["spec"]["replicas"] == 1, timeout=5)
        finally:
            if loop is not None:
                loop.cancel()
            await a.shutdown()
            await b.shutdown()

    asyncio.run(main())


def test_a_request_time_lost_to_a_concurrent_write_is_written_again(kube):
    """Two pods publish their last request at once; the older one lands last. The newer one's pod notices."""
    kube.seed("chat", replicas=1)

    async def main():
        clock = [1_000_000.0]
        _a, pa, _ = control_plane(kube, clock)
        _b, pb, _ = control_plane(kube, clock)
        await pa.watch()
        await pb.watch()
        try:
            await until(lambda: pa.seen and pb.seen)
            fault(kube, method="PATCH", path="/deployments/chat", delay=0.5)  # b's write is slow: it lands last
            slow = asyncio.create_task(pb.publish_activity(995.0, 0.0, 1.0))
            await asyncio.sleep(0.1)
            await pa.publish_activity(1000.0, 0.0, 1.0)
            await slow
            await until(lambda: pa.last_request() == 995.0)  # a's newer time was overwritten
            await pa.publish_activity(1000.0, 2.0, 1.0)  # a's next turn, no new request on a
            await until(lambda: pb.last_request() == 1000.0, timeout=3)
        finally:
            await pa.shutdown()
            await pb.shutdown()

    asyncio.run(main())
