"""Failover: which deployments and replicas one request tries, in which order, within one deadline.

    deployments  the route's pick, then (unless strict) its other deployments, heaviest first, then its
                 `fallbacks`' (never a route the caller's team may not use)
    replicas     a free ready replica of the deployment, waiting in its queue; on a failure before the
                 first byte, another ready replica; the only replica refused: once more after a pause,
                 since an engine that is restarting says so within it and the retry then waits for it
    deadline     the route timeout (capped by the team's) bounds the whole request, queueing, retries
                 and fallbacks together, not each attempt; a request that wakes a stopped deployment
                 waits up to the deployment's wake_timeout for it, then has the route timeout again
    strict       (`fallbacks: none`) one deployment, no waiting for a starting replica: fail at once

An attempt is the caller's (the proxy's HTTP work): it raises UpstreamError when nothing reached the
client and the request may go elsewhere. Everything else it raises or returns ends the plan. Failed
attempts are counted per replica here and reported to the control plane, which decides ejection; an
attempt tells `answered` when the replica answered and `failed` when a stream broke off later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from modelfleet.backends.base import Backend
from modelfleet.errors import APIError, Unavailable, UpstreamBusy, UpstreamError, UpstreamTimeout
from modelfleet.observability import tracing
from modelfleet.routing.dispatch import Dispatcher
from modelfleet.routing.routes import WeightedChoice
from modelfleet.values import Replica

T = TypeVar("T")
Attempt = Callable[["Target", Replica, float], Awaitable[T]]
_RETRY_PAUSE = 0.05


@dataclass(slots=True)
class Target:
    """One deployment as routing sees it: how to reach it and how many may use it at once."""

    name: str
    kind: str
    upstream_model: str
    dispatcher: Dispatcher
    backend: Backend
    supports_embeddings: bool


@dataclass(slots=True)
class Route:
    name: str
    timeout: float
    choice: WeightedChoice
    sticky: str | None = None  # "user", or a header name
    strict: bool = False
    fallbacks: tuple[str, ...] = ()


class Router:
    def __init__(
        self,
        routes: dict[str, Route],
        targets: dict[str, Target],
        *,
        request_failed: Callable[[Replica, str, int], bool] = lambda r, why, n: False,
        wake: Callable[[str], Awaitable[float]] | None = None,
    ) -> None:
        self.routes = routes
        self.targets = targets
        self.request_failed = request_failed  # the control plane's verdict: True = ejected
        self.wake = wake  # starts a stopped deployment; returns how long to wait for it
        # Counted for /metrics: {(route, deployment, reason)} and {(route, from, to, reason)}: n.
        self.retries: dict[tuple[str, ...], int] = {}
        self.failovers: dict[tuple[str, ...], int] = {}

    def candidates(self, route: Route, first: str, may_use: Callable[[str], bool] | None = None) -> list[Target]:
        """The deployments to try, in order."""
        if route.strict or (not route.fallbacks and len(route.choice.by_weight) == 1):
            return [self.targets[first]]
        names = route.choice.order(first)
        for fb_name in route.fallbacks:
            if may_use is None or may_use(fb_name):
                fb = self.routes[fb_name]
                names += fb.choice.order(fb.choice.pick())
        return [self.targets[n] for n in dict.fromkeys(names)]  # in order, each once

    @staticmethod
    def answered(replica: Replica) -> None:
        """The replica answered in full (a reply, or a stream to its end): its failures in a row end."""
        if replica.traffic.failures:
            replica.traffic.failures = 0

    def failed(self, replica: Replica, reason: str) -> None:
        """A request failed on `replica`, before or after its first byte: count it, let health decide."""
        t = replica.traffic
        t.failures += 1
        t.failed += 1
        if self.request_failed(replica, reason, t.failures):
            t.failures = 0  # ejected: a readmitted replica starts counting afresh

    async def run(
        self,
        route: Route,
        candidates: list[Target],
        timeout: float,
        attempt: Attempt[T],
        on_target: Callable[[Target], None] | None = None,
    ) -> T:
        """Try `candidates` in order until an attempt answers, all within `timeout` seconds.

        `on_target` hears of each deployment as the plan turns to it (so a request that fails before any
        attempt, queued out or refused a wake, is still accounted to the deployment that refused it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        errors: list[APIError] = []
        for i, target in enumerate(candidates):
            if on_target is not None:
                on_target(target)
            try:
                return await self._on(route, target, deadline, timeout, attempt, last=i == len(candidates) - 1)
            except (Unavailable, UpstreamError) as exc:
                errors.append(exc)
                if loop.time() >= deadline and i < len(candidates) - 1:
                    errors.append(_out_of_time(route, timeout, candidates[i + 1 :]))
                    break
                if i < len(candidates) - 1:
                    key = (route.name, target.name, candidates[i + 1].name, exc.code or exc.type)
                    self.failovers[key] = self.failovers.get(key, 0) + 1
        raise _exhausted(route, candidates, errors)

    async def _on(
        self, route: Route, target: Target, deadline: float, timeout: float, attempt: Attempt[T], *, last: bool
    ) -> T:
        """Answer from one deployment, retrying on its other replicas while nothing reached the client."""
        loop = asyncio.get_running_loop()
        dispatcher = target.dispatcher
        tried: list[Replica] = []
        same_again = False
        # Waiting for a starting replica beats failing, unless there is somewhere else to go.
        wait_starting = last and not route.strict
        woken = 0.0
        # A replica given less than this (queueing or another replica's failure ate the rest) is not blamed for
        # timing out; the margin keeps the moments spent before the first attempt from excusing every timeout.
        cut = 0.9 * timeout
        if self.wake is not None and dispatcher.stopped():
            woken = await self.wake(target.name)  # raises a 503 naming why, if it may not be woken now
            wait_starting = True
        while True:
            if woken:  # up to wake_timeout for the woken deployment, then the route timeout, once, for the rest
                waiting = (
                    tracing.start("wake wait", **{"modelfleet.deployment": target.name}) if tracing.TRACER else None
                )
                try:
                    replica = await self._acquire(target, woken, () if same_again else tried, True, woken)
                finally:
                    if waiting is not None:
                        waiting.end()
                deadline = max(deadline, loop.time() + timeout)
                woken = 0.0
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _timed_out(target, tried)
                replica = await self._acquire(target, remaining, () if same_again else tried, wait_starting, 0.0)
            budget = deadline - loop.time()
            if budget <= 0:  # granted a slot just as the deadline passed: no attempt with no time
                dispatcher.release(replica)
                raise _timed_out(target, tried)
            try:
                result = await attempt(target, replica, budget)
            except UpstreamError as exc:
                # Busy is not broken; and a timeout within what was left of the request's deadline (after
                # queueing or another deployment's failure) says nothing about this replica.
                if not isinstance(exc, UpstreamBusy) and not (isinstance(exc, UpstreamTimeout) and budget < cut):
                    self.failed(replica, exc.message)
                tried.append(replica)
                retry = (route.name, target.name, exc.code or exc.type)
                if any(r.ready and r not in tried for r in dispatcher.replicas):
                    self.retries[retry] = self.retries.get(retry, 0) + 1
                    continue  # another replica of the same deployment
                if exc.code != "upstream_unreachable" or same_again:
                    raise
                # The only replica refused or died: an engine restarting says so within the pause.
                self.retries[retry] = self.retries.get(retry, 0) + 1
                same_again = True
            else:
                return result
            finally:
                dispatcher.release(replica)
            await asyncio.sleep(_RETRY_PAUSE)

    @staticmethod
    async def _acquire(
        target: Target, remaining: float, exclude: Collection[Replica], wait_starting: bool, woken: float
    ) -> Replica:
        try:
            return await target.dispatcher.acquire(remaining, exclude, wait_starting)
        except Unavailable as exc:
            if not woken or exc.code != "deployment_overloaded":
                raise  # not woken, or the wake itself failed: the replicas' reasons say why
            raise Unavailable(
                f"deployment {target.name!r} is starting: this request woke it (wake_on_request) and it was "
                f"not ready within wake_timeout {woken:g}s; retry shortly",
                retry_after=max(5.0, woken / 2), code="deployment_starting",
            ) from exc  # fmt: skip


def _timed_out(target: Target, tried: list[Replica]) -> UpstreamTimeout:
    last = f" (last tried: {tried[-1].name})" if tried else ""
    return UpstreamTimeout(f"deployment {target.name!r}: the route timeout ran out before an answer{last}")


def _out_of_time(route: Route, timeout: float, left: list[Target]) -> UpstreamTimeout:
    names = ", ".join(t.name for t in left)
    return UpstreamTimeout(f"route {route.name!r}: its timeout of {timeout:g}s ran out before trying {names}")


def _exhausted(route: Route, candidates: list[Target], errors: list[APIError]) -> APIError:
    """One error for a request no deployment could serve; it names each deployment and why."""
    if route.strict:
        err = errors[0]
        err.message = f"route {route.name!r} is strict (fallbacks: none) and {err.message}"
        return err
    if len(errors) == 1:
        return errors[0]
    # The deadline ran out (504), or every deployment failed (the first deployment's error, with all of them).
    answer = errors[-1] if isinstance(errors[-1], UpstreamTimeout) else errors[0]
    why = "; ".join(f"{t.name}: {e.message}" for t, e in zip(candidates, errors, strict=False))
    answer.message = f"route {route.name!r}: no deployment could answer ({why})"
    return answer
