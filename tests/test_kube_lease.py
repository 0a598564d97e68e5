"""Several gateway pods, one kubernetes deployment: only the pod holding its Lease acts (scales, schedules, idle
stop, reconciling drift); the others route, publish their requests' times and pass on starts, stops and wakes.
Against the fake Kubernetes API server over HTTP (modelfleet.testing.fake_kube), through the real client."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import openai
import pytest
from conftest import Gateway, write_fleet
from test_kubernetes import HELLO, FakeKube, until, wait_until

from modelfleet.config import parse_fleet
from modelfleet.control.deployments import Deployments
from modelfleet.control.platforms.kubernetes import KubernetesWorkload
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.values import Replica, ReplicaState

IDLE = 600.0


@pytest.fixture
def kube(start) -> FakeKube:
    return start(FakeKube)


def ticking(cp: Deployments) -> asyncio.Task[None]:
    """A control plane's loop, as its Periodic runs it: a tick every 0.1 s until cancelled."""

    async def loop() -> None:
        while True:
            await cp.tick()
            await asyncio.sleep(0.1)

    return asyncio.create_task(loop())


def control_plane(kube: FakeKube, clock, **settings: str) -> tuple[Deployments, KubernetesWorkload, list[Replica]]:
    """One gateway pod's control plane for the deployment `chat`, with time for schedules taken from `clock`."""
    extra = "".join(f", {k}: {v}" for k, v in settings.items())
    fleet = parse_fleet(f"""\
deployments:
  chat: {{kind: kubernetes, model: m, namespace: ml, api_url: "{kube.url}", lease_duration: 1s,
         reconcile_interval: 0.5s,
         schedule: {{idle_stop_after: {IDLE:g}s}}{extra}}}
routes:
  chat: {{deployments: [chat]}}
""", env={})  # fmt: skip
    registry = ReplicaRegistry()
    reps = registry.add("chat", [Replica("chat", "chat-0", "")])
    platform = KubernetesWorkload(reps, fleet.deployments["chat"], registry)
    return Deployments(fleet, {"chat": platform}, registry, None, clock=lambda: clock[0]), platform, reps


def writes(kube: FakeKube, resource: str) -> list[dict]:
    return [w for w in httpx.get(kube.url + "/fake/writes").json() if w["resource"] == resource]


def test_only_the_lease_holder_acts_and_idle_stop_counts_every_pods_requests(kube):
    kube.seed("chat", replicas=0)

    async def main():
        clock = [1_000_000.0]
        a, pa, reps_a = control_plane(kube, clock)
        b, pb, reps_b = control_plane(kube, clock)
        await a.start()
        await b.start()
        assert (pa.leading, pb.leading) == (True, False)  # the first to ask holds the Lease
        await until(lambda: reps_a[0].ready and reps_b[0].ready)  # both route to the pod the holder scaled up
        assert reps_a[0].url == reps_b[0].url
        assert [(w["replicas"], w["holder"]) for w in writes(kube, "deployments/scale")] == [(1, pa.lease.me)]

        # Requests reach only the follower (b). It publishes when; the holder (a) does not idle-stop meanwhile.
        for _step in range(1, 6):
            clock[0] += IDLE / 3
            reps_b[0].traffic.requests += 1  # routing's counter: the follower served a request
            await b.tick()
            await until(lambda: pa.last_request() == clock[0])
            await a.tick()
        assert kube.deployment("chat")["spec"]["replicas"] == 1
        assert a.desired["chat"].state == "running"
        clock[0] += IDLE + 1  # no request anywhere for idle_stop_after: the holder stops it, once
        await b.tick()
        await a.tick()
        assert kube.deployment("chat")["spec"]["replicas"] == 0
        await until(lambda: pb.published() is not None and pb.published().state == "stopped")
        await b.tick()
        assert b.desired["chat"].state == "stopped" and "idle" in b.desired["chat"].reason
        scales = writes(kube, "deployments/scale")
        assert [(w["replicas"], w["holder"]) for w in scales] == [(1, pa.lease.me), (0, pa.lease.me)]

        # A person's start on the follower goes through the holder; so does a wake (b holds the request).
        clock[0] += 1
        assert (await b.set("chat", "start", "asked on pod b"))["desired"] == "running"
        await until(lambda: pa.published().reason == "asked on pod b")
        await a.tick()
        assert kube.deployment("chat")["spec"]["replicas"] == 1 and a.desired["chat"].reason == "asked on pod b"
        assert [w["holder"] for w in writes(kube, "deployments/scale")] == [pa.lease.me] * 3

        # Someone scales it by hand: the holder puts it back within reconcile_interval; the follower never does.
        httpx.patch(f"{kube.url}/apis/apps/v1/namespaces/ml/deployments/chat/scale", json={"spec": {"replicas": 3}},
                    headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()  # fmt: skip
        await until(lambda: kube.deployment("chat")["spec"]["replicas"] == 1, timeout=5)
        assert [w["holder"] for w in writes(kube, "deployments/scale")][-1] == pa.lease.me

        # The holder shuts down cleanly: it hands the Lease on at once, and b acts from then on.
        await a.shutdown()
        await until(lambda: pb.leading, timeout=3)
        await b.tick()
        clock[0] += 1
        await b.set("chat", "stop", "asked on pod b, now the holder")
        assert kube.deployment("chat")["spec"]["replicas"] == 0
        assert writes(kube, "deployments/scale")[-1]["holder"] == pb.lease.me

        # A new gateway pod (a rollout) knows only the schedule ("running"): it takes what was decided instead,
        # and when it takes over, it keeps the model stopped.
        clock[0] += 60
        c, pc, _ = control_plane(kube, clock)
        await c.start()
        assert not pc.leading and c.desired["chat"].reason == "asked on pod b, now the holder"
        await b.shutdown()
        await until(lambda: pc.leading, timeout=3)
        await c.tick()
        assert c.desired["chat"].state == "stopped" and kube.deployment("chat")["spec"]["replicas"] == 0
        last = writes(kube, "deployments/scale")[-1]  # on taking over, the holder makes its desired state so
        assert (last["replicas"], last["holder"]) == (0, pc.lease.me)
        await c.shutdown()

    asyncio.run(main())


def test_a_wake_on_a_follower_is_started_by_the_holder(kube):
    kube.seed("chat", replicas=0)

    async def main():
        clock = [1_000_000.0]
        a, pa, _ = control_plane(kube, clock, wake_on_request="true")
        b, _pb, reps_b = control_plane(kube, clock, wake_on_request="true")
        await a.start()
        await b.start()
        clock[0] += 1
        await a.set("chat", "stop", "test")
        await until(lambda: reps_b[0].state is ReplicaState.STOPPED)

        loop = ticking(a)
        clock[0] += 1
        started = time.monotonic()
        assert await b.wake("chat") == 600.0  # returns once the holder has scaled the Deployment up
        assert time.monotonic() - started < 3
        assert kube.deployment("chat")["spec"]["replicas"] == 1
        assert writes(kube, "deployments/scale")[-1]["holder"] == pa.lease.me
        await until(lambda: reps_b[0].ready)
        assert b.wakes.count["chat"] == 1
        loop.cancel()
        await a.shutdown()
        await b.shutdown()

    asyncio.run(main())


@pytest.mark.slow
def test_when_the_holder_dies_another_gateway_takes_over_after_the_lease_expires(tmp_path, kube, start):
    """Two gateway processes; the holder is killed (no clean release): the other acts once the Lease expires."""
    kube.seed("chat", replicas=0)
    fleets = []
    for pod in ("a", "b"):
        (tmp_path / pod).mkdir()
        fleets.append(write_fleet(tmp_path / pod, f"""\
state: {{store: "sqlite:///{tmp_path}/{pod}.db"}}
deployments:
  chat: {{kind: kubernetes, model: m, namespace: ml, api_url: "{kube.url}", lease_duration: 2s,
         reconcile_interval: 0.5s, wake_on_request: true}}
routes:
  chat: {{deployments: [chat], timeout: 30s}}
"""))  # fmt: skip
    first = start(Gateway, fleets[0])
    wait_until(lambda: kube.deployment("chat")["spec"]["replicas"] == 1)
    second = start(Gateway, fleets[1])
    sdk = openai.OpenAI(base_url=second.url, api_key="unused", max_retries=0, timeout=30)
    assert sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2).choices[0].message.content
    holders = {w["holder"] for w in writes(kube, "deployments/scale")}
    assert len(holders) == 1 and f"_{first.proc.pid}_" in holders.pop()

    first.stop(signal.SIGKILL)  # it cannot release the Lease
    killed = time.monotonic()
    httpx.patch(f"{kube.url}/apis/apps/v1/namespaces/ml/deployments/chat/scale", json={"spec": {"replicas": 4}},
                headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()  # fmt: skip
    wait_until(lambda: kube.deployment("chat")["spec"]["replicas"] == 1, timeout=15)  # reconciled by the new holder
    assert time.monotonic() - killed >= 1.5  # not before the Lease expired (2s, seen from the survivor's clock)
    last = writes(kube, "deployments/scale")[-1]
    assert last["replicas"] == 1 and f"_{second.proc.pid}_" in last["holder"]
    assert sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2).choices[0].message.content
