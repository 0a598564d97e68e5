"""Pure pieces of the hot path: weighted route choice, the replica queue, the SSE decoder."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import pytest

from modelfleet.api.sse import SSEDecoder
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.errors import Unavailable
from modelfleet.routing.dispatch import Dispatcher
from modelfleet.routing.routes import WeightedChoice
from modelfleet.values import Replica, ReplicaState


def test_weighted_choice_follows_weights_and_skips_zero():
    random.seed(7)
    choice = WeightedChoice({"a": 80, "b": 20, "off": 0})
    counts = Counter(choice.pick() for _ in range(20_000))
    assert set(counts) == {"a", "b"}
    assert abs(counts["a"] / 20_000 - 0.8) < 0.015  # ~5 standard deviations
    assert choice.pick(0.0) == "a" and choice.pick(0.9999) == "b"


def ready(name: str, dep: str = "d") -> Replica:
    return Replica(dep, name, url=f"http://{name}", state=ReplicaState.READY)


def run(coro):
    return asyncio.run(coro)


def test_least_inflight_replica_is_chosen():
    async def main():
        a, b = ready("a"), ready("b")
        d = Dispatcher("d", [a, b], max_concurrency=None, max_queue=0)
        first = await d.acquire(1)
        second = await d.acquire(1)
        assert {first.name, second.name} == {"a", "b"}
        d.release(first)
        assert (await d.acquire(1)) is first

    run(main())


def test_queue_is_fifo_bounded_and_hands_slots_on():
    async def main():
        r = ready("a")
        d = Dispatcher("d", [r], max_concurrency=1, max_queue=2)
        held = await d.acquire(1)
        order: list[int] = []

        async def wait(i: int):
            got = await d.acquire(5)
            order.append(i)
            d.release(got)

        waiters = [asyncio.create_task(wait(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        assert d.queued == 2
        with pytest.raises(Unavailable) as info:
            await d.acquire(1)  # queue full: refused at once
        assert info.value.status == 503 and info.value.code == "deployment_overloaded"
        assert info.value.headers["Retry-After"] == "1"
        d.release(held)
        await asyncio.gather(*waiters)
        assert order == [0, 1]
        assert r.traffic.inflight == 0

    run(main())


def test_a_queued_retry_never_gets_the_replica_it_failed_on():
    async def main():
        a, b = ready("a"), ready("b")
        d = Dispatcher("d", [a, b], max_concurrency=1, max_queue=4)
        held_a, held_b = await d.acquire(1), await d.acquire(1)
        retry = asyncio.create_task(d.acquire(5, exclude=[a]))  # failed on a: queued behind nobody
        fresh = asyncio.create_task(d.acquire(5))
        await asyncio.sleep(0.01)
        d.release(held_a)  # a frees first: not for the retry, so the fresh request behind it takes it
        await asyncio.sleep(0.01)
        assert fresh.done() and fresh.result() is a and not retry.done()
        d.release(held_b)
        assert await retry is b
        assert d.queued == 0

    run(main())


def test_queue_wait_times_out_and_leaks_no_slot():
    async def main():
        r = ready("a")
        d = Dispatcher("d", [r], max_concurrency=1, max_queue=4)
        held = await d.acquire(1)
        with pytest.raises(Unavailable, match=r"no free replica within 0\.05s"):
            await d.acquire(0.05)
        assert d.queued == 0
        d.release(held)
        assert r.traffic.inflight == 0

    run(main())


def test_no_ready_replica_fails_fast_with_reasons():
    async def main():
        r = Replica("d", "d-0", url="x", state=ReplicaState.UNHEALTHY, reason="engine exited with code 9")
        d = Dispatcher("d", [r], max_concurrency=1, max_queue=4)
        with pytest.raises(Unavailable, match="d-0: engine exited with code 9"):
            await d.acquire(5)

    run(main())


def test_requests_wait_for_a_starting_replica():
    async def main():
        registry = ReplicaRegistry()
        (r,) = registry.add("d", [Replica("d", "d-0", url="x")])  # starting
        d = Dispatcher("d", [r], max_concurrency=1, max_queue=4)
        registry.listen(lambda _: d.hand_on())
        task = asyncio.create_task(d.acquire(5))
        await asyncio.sleep(0.01)
        registry.mark(r, ReplicaState.READY)
        assert (await task) is r

    run(main())


STREAM = (
    b"".join(
        b"data: " + json.dumps({"choices": [{"delta": {"content": f"t{i}"}}]}).encode() + b"\n\n" for i in range(3)
    )
    + b": keep-alive comment\n\ndata: [DONE]\n\n"
)


@pytest.mark.parametrize("crlf", [False, True])
def test_sse_decoder_survives_every_split_point(crlf):
    raw = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    expected = SSEDecoder().feed(raw)
    assert len(expected) == 4 and expected[-1] == b"[DONE]"
    for cut in range(1, len(raw)):
        dec = SSEDecoder()
        assert dec.feed(raw[:cut]) + dec.feed(raw[cut:]) == expected, cut


def test_power_of_two_prefers_fresh_low_load_and_never_trusts_stale_readings():
    import time

    async def main():
        busy, idle, stale = ready("busy"), ready("idle"), ready("stale")
        now = time.monotonic()
        busy.load, busy.load_at = 5.0, now
        idle.load, idle.load_at = 0.2, now
        stale.load, stale.load_at = 0.0, now - 10  # looked idle, 10 s ago: unknown now
        d = Dispatcher("d", [busy, idle, stale], max_concurrency=None, max_queue=8, stale_after=2.0)
        picks = Counter()
        for _ in range(300):
            r = await d.acquire(1.0)
            picks[r.name] += 1
            d.release(r)
        # Two of three are sampled each time: idle wins whenever it is sampled (2/3 of the time), busy
        # wins only against stale, and stale never wins.
        assert picks["stale"] == 0
        assert picks["idle"] > picks["busy"] > 0

    run(main())


def test_sticky_points_are_stable_uniform_and_move_few_keys_when_weights_change():
    from modelfleet.routing.routes import sticky_point

    keys = [f"user-{i}" for i in range(5000)]
    assert [sticky_point("r", k) for k in keys[:5]] == [sticky_point("r", k) for k in keys[:5]]
    before, after = WeightedChoice({"a": 80, "b": 20}), WeightedChoice({"a": 70, "b": 30})
    moved = sum(before.pick(sticky_point("r", k)) != after.pick(sticky_point("r", k)) for k in keys)
    assert abs(moved / len(keys) - 0.10) < 0.02  # only the keys between 0.7 and 0.8 move
    # Routes are salted apart: one route's split says nothing about another's.
    assert sum(sticky_point("r", k) < 0.5 and sticky_point("s", k) < 0.5 for k in keys) / len(keys) < 0.3


def test_failover_order_is_the_pick_then_the_heaviest():
    assert WeightedChoice({"a": 10, "b": 60, "c": 30}).order("a") == ["a", "b", "c"]


# ---- the failover plan, driven without HTTP


def _plan(*names: str, timeout: float = 0.5, replicas: int = 1, wake=None):
    from modelfleet.routing.plan import Route, Router, Target

    registry = ReplicaRegistry()
    targets = {}
    for n in names:
        reps = registry.add(n, [Replica(n, f"{n}-{i}", url="x", state=ReplicaState.READY) for i in range(replicas)])
        targets[n] = Target(n, "openai", n, Dispatcher(n, reps, max_concurrency=None, max_queue=8), None, True)  # type: ignore[arg-type]
    route = Route("r", timeout, WeightedChoice({names[0]: 1}), fallbacks=("fb",) if len(names) > 1 else ())
    routes = {"r": route}
    if len(names) > 1:
        routes["fb"] = Route("fb", timeout, WeightedChoice(dict.fromkeys(names[1:], 1)))
    failures: list[tuple[str, int]] = []
    registry.listen(lambda r: targets[r.deployment].dispatcher.hand_on())

    def request_failed(replica, reason, n):
        failures.append((replica.name, n))
        return False

    return Router(routes, targets, request_failed=request_failed, wake=wake), route, registry, failures


def test_one_deadline_bounds_replica_retries_and_fallbacks():
    from modelfleet.errors import UpstreamError

    async def main():
        router, route, _, failures = _plan("a", "b", timeout=0.5, replicas=3)
        budgets: list[float] = []

        async def slow_then_fail(target, replica, left):
            budgets.append(left)
            await asyncio.sleep(0.2)
            raise UpstreamError(f"{replica.name} failed")

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamError):
            await router.run(route, router.candidates(route, "a"), 0.5, slow_then_fail)
        assert loop.time() - started < 0.75  # three replicas of a and all of b would take 1.2 s
        assert budgets == sorted(budgets, reverse=True) and budgets[0] <= 0.5
        assert [n for _, n in failures] == [1] * len(failures)  # each replica failed once, in a row

    run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_replica_that_times_out_with_the_whole_budget_is_blamed_one_given_scraps_is_not(loop):
    from modelfleet.errors import UpstreamTimeout

    async def main():
        router, route, _, failures = _plan("a", timeout=0.3, replicas=2)

        tried: list[str] = []

        async def times_out(target, replica, left):
            tried.append(replica.name)
            await asyncio.sleep(0.2 if len(tried) == 1 else left)  # the first gives up early, as its own timer would
            raise UpstreamTimeout(f"{replica.name} did not answer")

        with pytest.raises(UpstreamTimeout):
            await router.run(route, router.candidates(route, "a"), 0.3, times_out)
        # The first replica had the whole 0.3 s and timed out: its fault. The second got the 0.1 s left: not its.
        assert len(tried) == 2 and [name for name, _ in failures] == tried[:1]

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        run(main())


def test_a_wake_extends_the_deadline_once():
    from modelfleet.errors import UpstreamError

    async def main():
        async def wake(name):  # as the lifecycle does: starting at once, ready a little later
            registry.mark_all(name, ReplicaState.STARTING)
            asyncio.get_running_loop().call_later(0.05, lambda: registry.mark_all(name, ReplicaState.READY))
            return 0.3

        router, route, registry, _ = _plan("a", timeout=0.2, replicas=4, wake=wake)
        for r in registry.replicas["a"]:
            registry.mark(r, ReplicaState.STOPPED)
        loop = asyncio.get_running_loop()

        async def failing(target, replica, left):
            await asyncio.sleep(0.1)
            raise UpstreamError("no")

        started = loop.time()
        with pytest.raises(UpstreamError):
            await router.run(route, router.candidates(route, "a"), 0.2, failing)
        # wake_timeout to come up, then one route timeout for all four replicas: not 4 x (wake + timeout)
        assert loop.time() - started < 0.35  # 0.05 s to come up + 0.2 s; each retry re-extending took 0.45 s

    run(main())
