"""kind: kubernetes against a fake Kubernetes API server over HTTP (modelfleet.testing.fake_kube), through the
real client (lightkube): start, stop, schedules, wakes, failures. Pods are fake OpenAI servers, so requests flow
through real gateway processes and the openai SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time

import httpx
import openai
import pytest
from conftest import Gateway, Proc, cli, free_port, write_fleet
from test_schedules import at

from modelfleet.config import parse_fleet
from modelfleet.control.deployments import Deployments
from modelfleet.control.platforms.kubernetes import KubernetesWorkload
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.state import open_store
from modelfleet.values import Replica, ReplicaState

ADMIN = "admin-key-0123456789abcdef"
HELLO = [{"role": "user", "content": "Hello"}]


class FakeKube(Proc):
    def __init__(self, *flags: str) -> None:
        argv = [__import__("sys").executable, "-m", "modelfleet.testing.fake_kube", "--port", "0", *flags]
        super().__init__(argv, r"FAKE_KUBE_READY port=(\d+)", stream="stdout")
        self.url = f"http://127.0.0.1:{self.match.group(1)}"

    def seed(self, name: str, namespace: str = "ml", **spec) -> None:
        httpx.post(
            self.url + "/fake/deployments", json={"namespace": namespace, "name": name, **spec}
        ).raise_for_status()

    def deployment(self, name: str, namespace: str = "ml") -> dict:
        resp = httpx.get(f"{self.url}/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        resp.raise_for_status()
        return resp.json()

    def pods(self, name: str) -> list[dict]:
        return [p for p in httpx.get(self.url + "/fake/pods").json() if p["deployment"] == name]

    def calls(self) -> list[dict]:
        return httpx.get(self.url + "/fake/calls").json()


@pytest.fixture
def kube(start) -> FakeKube:
    return start(FakeKube)


def gateway_fleet(tmp_path, kube: FakeKube, **settings: str) -> str:
    extra = "".join(f", {k}: {v}" for k, v in settings.items())
    return write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
auth: {{admin_key: {ADMIN}}}
deployments:
  chat: {{kind: kubernetes, model: Qwen/Qwen2.5-0.5B-Instruct, namespace: ml, api_url: "{kube.url}"{extra}}}
routes:
  chat: {{deployments: [chat], timeout: 30s}}
""")  # fmt: skip


def deployments(gw, *args: str) -> str:
    return cli("deployments", *args, "--url", gw.base, "--admin-key", ADMIN).stdout


def client(gw, timeout: float = 60) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0, timeout=timeout)


def wait_until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s: {check}")


def test_start_scales_the_deployment_and_requests_spread_over_its_pods(tmp_path, kube, start):
    kube.seed("chat", replicas=0)
    gw = start(Gateway, gateway_fleet(tmp_path, kube, replicas="2"))
    assert kube.deployment("chat")["spec"]["replicas"] == 2
    sdk = client(gw)
    for _ in range(8):
        assert sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=4).choices[0].message.content
    pods = kube.pods("chat")
    assert len(pods) == 2 and all(p["requests"] >= 2 for p in pods), pods  # each engine is a replica of its own
    metrics = httpx.get(gw.base + "/metrics").text
    for i in range(2):
        assert f'modelfleet_replica_ready{{deployment="chat",replica="chat-{i}"}} 1.0' in metrics
    scaled = [c for c in kube.calls() if c["resource"] == "deployments/scale"]
    assert scaled == [{"verb": "patch", "group": "apps", "resource": "deployments/scale", "namespace": "ml"}]


def test_a_stop_lets_requests_in_flight_finish_and_refuses_new_ones(tmp_path, kube, start):
    kube.seed("chat", replicas=1, grace=10, upstream={"chunks": 10, "chunk_delay": 0.2})
    gw = start(Gateway, gateway_fleet(tmp_path, kube))
    sdk = client(gw)
    stream = sdk.chat.completions.create(model="chat", messages=HELLO, stream=True)
    chunks = [next(iter(stream))]  # the first byte is here: the request is in flight on the pod
    assert "chat: stopped after" in deployments(gw, "stop", "chat")
    assert kube.deployment("chat")["spec"]["replicas"] == 0
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(model="chat", messages=HELLO)
    assert refused.value.status_code == 503 and "stopped" in refused.value.message
    chunks += list(stream)
    assert len(chunks) == 10 and chunks[-1].choices[0].finish_reason == "stop"  # finished on the terminating pod
    assert kube.pods("chat")[0]["terminating"]
    status = {d["name"]: d for d in json.loads(deployments(gw, "status", "--json"))}
    assert status["chat"]["desired"] == status["chat"]["observed"] == "stopped"
    assert "chat: running after" in deployments(gw, "start", "chat")  # waits for a ready pod
    assert sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2).choices[0].message.content


def test_extra_gateway_workers_follow_the_pods_the_primary_scaled(tmp_path, kube, start):
    kube.seed("chat", replicas=0)
    path = gateway_fleet(tmp_path, kube, replicas="2")
    path.write_text("server: {workers: 2}\n" + path.read_text())
    gw = start(Gateway, path)
    sdk = client(gw)
    for _ in range(16):
        assert sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2).choices[0].message.content
    assert all(p["requests"] >= 2 for p in kube.pods("chat"))
    watchers = {c["verb"] for c in kube.calls() if c["resource"] == "endpointslices"}
    assert watchers == {"list", "watch"}
    assert len([c for c in kube.calls() if c["resource"] == "deployments/scale"]) == 1  # only the primary scales


def test_a_wake_is_held_until_the_pods_are_ready(tmp_path, kube, start):
    kube.seed("chat", replicas=1, ready_after=None)  # pods never turn ready by themselves
    gw = start(Gateway, gateway_fleet(tmp_path, kube, wake_on_request="true", wake_timeout="60s"), wait_ready=False)
    deployments(gw, "stop", "chat")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        reply = pool.submit(client(gw).chat.completions.create, model="chat", messages=HELLO, max_tokens=3)
        wait_until(lambda: kube.deployment("chat")["spec"]["replicas"] == 1)  # woken: scaled up again
        time.sleep(1.0)
        assert not reply.done()  # held: the pod runs but is not ready
        httpx.post(kube.url + "/fake/ready", json={"namespace": "ml", "name": "chat"}).raise_for_status()
        assert reply.result(timeout=30).choices[0].message.content
    assert time.monotonic() - started >= 1.0
    metrics = httpx.get(gw.base + "/metrics").text
    assert 'modelfleet_wakes_total{deployment="chat"} 1.0' in metrics


def test_a_deployment_that_never_turns_ready_ends_the_wake_in_a_503(tmp_path, kube, start):
    kube.seed("chat", replicas=1, ready_after=None)
    gw = start(Gateway, gateway_fleet(tmp_path, kube, wake_on_request="true", wake_timeout="2s"), wait_ready=False)
    deployments(gw, "stop", "chat")
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client(gw).chat.completions.create(model="chat", messages=HELLO)
    waited = time.monotonic() - started
    assert err.value.status_code == 503 and "not ready within wake_timeout 2s" in err.value.message
    assert 1.9 <= waited < 10
    assert kube.deployment("chat")["spec"]["replicas"] == 1  # it was woken; it just never got ready


# ---- the platform in this process, against the same fake, with time driven by the test


def workload(kube: FakeKube, replicas: int = 1, name: str = "chat") -> tuple[KubernetesWorkload, list[Replica]]:
    fleet = parse_fleet(f"""\
deployments:
  {name}: {{kind: kubernetes, model: m, namespace: ml, replicas: {replicas}, api_url: "{kube.url}",
           schedule: {{start: "0 7 * * MON-FRI", stop: "0 18 * * MON-FRI", timezone: Europe/Berlin}}}}
routes:
  chat: {{deployments: [{name}]}}
""", env={})  # fmt: skip
    registry = ReplicaRegistry()
    reps = registry.add(name, [Replica(name, f"{name}-{i}", "") for i in range(replicas)])
    return KubernetesWorkload(reps, fleet.deployments[name], registry), reps


async def until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not true in time")
        await asyncio.sleep(0.05)


def test_schedule_boundaries_scale_the_deployment_up_and_down(tmp_path, kube):
    kube.seed("chat", replicas=0)

    async def main():
        platform, reps = workload(kube, replicas=2)
        fleet = parse_fleet(f'deployments: {{chat: {{kind: kubernetes, model: m, api_url: "{kube.url}"}}}}\n'
                            "routes: {chat: {deployments: [chat]}}", env={})  # fmt: skip
        fleet = fleet.model_copy(update={"deployments": {"chat": platform.dep}})
        clock = [at(23, 17, 55)]
        store = open_store(f"sqlite:///{tmp_path}/state.db")
        d = Deployments(fleet, {"chat": platform}, platform.registry, store, clock=lambda: clock[0])
        await d.start()
        await until(lambda: all(r.state is ReplicaState.READY for r in reps))
        assert kube.deployment("chat")["spec"]["replicas"] == 2 and len({r.url for r in reps}) == 2
        clock[0] = at(23, 18, 0)
        await d.tick()
        assert kube.deployment("chat")["spec"]["replicas"] == 0
        assert all(r.state is ReplicaState.STOPPED and "scaled to 0" in r.reason for r in reps)
        clock[0] = at(24, 7, 0)
        await d.tick()
        assert kube.deployment("chat")["spec"]["replicas"] == 2
        await until(lambda: all(r.state is ReplicaState.READY for r in reps))
        await d.shutdown()

    asyncio.run(main())


def test_a_pod_that_turns_unready_leaves_its_replica_until_another_is_ready(kube):
    kube.seed("chat", replicas=0)

    async def main():
        platform, reps = workload(kube)
        await platform.start()
        await until(lambda: reps[0].ready)
        first = reps[0].url
        httpx.post(kube.url + "/fake/ready", json={"namespace": "ml", "name": "chat", "ready": False})
        await until(lambda: reps[0].state is ReplicaState.STARTING)
        assert "0 of 1 ready" in reps[0].reason
        httpx.post(kube.url + "/fake/ready", json={"namespace": "ml", "name": "chat", "ready": True})
        await until(lambda: reps[0].ready)
        assert reps[0].url == first
        await platform.shutdown()

    asyncio.run(main())


def test_failures_are_named_a_missing_deployment_and_a_rollout_past_its_deadline(kube):
    kube.seed("chat", replicas=0, ready_after=None)

    async def main():
        missing, reps = workload(kube, name="absent")
        await missing.start()
        assert reps[0].state is ReplicaState.UNHEALTHY
        assert reps[0].reason == ("Deployment ml/absent does not exist; apply the manifests that "
                                  "`modelfleet deploy k8s` renders")  # fmt: skip
        await missing.shutdown()

        platform, reps = workload(kube)
        await platform.start()
        await until(lambda: reps[0].state is ReplicaState.STARTING)
        httpx.post(kube.url + "/fake/fail", json={"namespace": "ml", "name": "chat"}).raise_for_status()
        await until(lambda: reps[0].state is ReplicaState.UNHEALTHY)
        assert "ProgressDeadlineExceeded: ReplicaSet has timed out progressing." in reps[0].reason
        await platform.start()  # a new start is a new rollout: starting again, not failed
        assert reps[0].state is ReplicaState.STARTING
        await platform.shutdown()

        unreachable = platform.dep.model_copy(update={"api_url": f"http://127.0.0.1:{free_port()}"})
        offline = KubernetesWorkload(reps, unreachable, platform.registry)
        await offline.start()  # the gateway keeps running; the replicas say why they are out
        assert reps[0].state is ReplicaState.UNHEALTHY and reps[0].reason.startswith("cannot scale Deployment ml/chat")
        await offline.shutdown()

    asyncio.run(main())


# ---- the fleet file's kind: kubernetes


def test_config_mistakes_name_the_deployment_and_the_field():
    from modelfleet.errors import ConfigError

    def problems(deployment: str) -> str:
        text = f"deployments:\n  tuned: {deployment}\nroutes:\n  r: {{deployments: [tuned]}}\n"
        with pytest.raises(ConfigError) as err:
            parse_fleet(text, env={})
        return str(err.value)

    assert "deployments.tuned (line 2): missing required field 'model'" in problems("{kind: kubernetes}")
    assert "the adapter 'v3' is not one of its lora_modules (v1)" in problems(
        "{kind: kubernetes, model: m, lora_modules: {v1: org/v1}, adapter: v3}"
    )
    assert "deployments.tuned.gpu (line 2): unknown field 'gpu'; did you mean 'gpus'?" in problems(
        "{kind: kubernetes, model: m, gpu: 1}"
    )
    assert "deployments.tuned.namespace" in problems("{kind: kubernetes, model: m, namespace: Team_A}")
    assert "deployments.tuned.resources.memory" in problems("{kind: kubernetes, model: m, resources: {memory: 32GB}}")


def test_the_watch_recovers_from_dropped_streams_and_expired_versions(kube):
    kube.seed("chat", replicas=0)

    async def main():
        platform, reps = workload(kube, replicas=2)
        await platform.start()
        await until(lambda: all(r.ready for r in reps))
        for compact in ("false", "true"):  # a dropped stream resumes; an expired version (410) lists again
            httpx.post(f"{kube.url}/fake/drop-watches?compact={compact}").raise_for_status()
            httpx.post(kube.url + "/fake/ready", json={"namespace": "ml", "name": "chat", "ready": False})
            await until(lambda: all(r.state is ReplicaState.STARTING for r in reps))
            httpx.post(kube.url + "/fake/ready", json={"namespace": "ml", "name": "chat", "ready": True})
            await until(lambda: all(r.ready for r in reps))
        watches = [c for c in kube.calls() if c["verb"] == "watch" and c["resource"] == "endpointslices"]
        lists = [c for c in kube.calls() if c["verb"] == "list" and c["resource"] == "endpointslices"]
        assert len(watches) >= 3 and len(lists) == 2  # resumed once with its version, listed again after the 410
        await platform.shutdown()

    asyncio.run(main())
