"""The composition root: one fleet file in, a running gateway and control plane out.

Nothing else in modelfleet builds objects from the fleet; everything else is handed what it needs.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from modelfleet import secret_refs
from modelfleet.access.admin import TeamAdmin
from modelfleet.access.directory import Directory
from modelfleet.access.gate import Gate
from modelfleet.api.admin import AdminAPI
from modelfleet.api.app import create_app
from modelfleet.api.drain import Drain
from modelfleet.api.proxy import Proxy
from modelfleet.backends.base import Backend
from modelfleet.backends.openai_http import OpenAIHTTPBackend
from modelfleet.background import Periodic
from modelfleet.config import (
    Deployment,
    Fleet,
    KubernetesDeployment,
    LlamaCppDeployment,
    OpenAIDeployment,
    SageMakerDeployment,
)
from modelfleet.config.include import ownership
from modelfleet.config.loader import secret_values
from modelfleet.control import schedules
from modelfleet.control.channel import ChannelClient, ChannelServer
from modelfleet.control.deployments import observed
from modelfleet.control.plane import ControlPlane
from modelfleet.engine.model import check_engine_installed
from modelfleet.observability import tracing
from modelfleet.observability.access_log import AccessLog
from modelfleet.observability.fleet_state import FleetState
from modelfleet.observability.logging import redact_values
from modelfleet.observability.metrics import GatewayMetrics
from modelfleet.routing.dispatch import Dispatcher
from modelfleet.routing.plan import Route, Router, Target
from modelfleet.routing.routes import WeightedChoice
from modelfleet.state import LocalCounters, open_counters, open_store
from modelfleet.state.counters import periods
from modelfleet.state.usage import UsageLedger
from modelfleet.values import Replica

log = logging.getLogger("modelfleet")


class Gateway:
    def __init__(self, fleet: Fleet, *, metrics_dir: Path | None = None, worker: bool = False) -> None:
        if any(isinstance(d, LlamaCppDeployment) for d in fleet.deployments.values()):
            check_engine_installed()
        fleet = secret_refs.resolve(fleet)
        redact_values(secret_values(fleet))  # no log line, whoever writes it, shows one of them
        self.fleet = fleet
        self.metrics = GatewayMetrics(metrics_dir)
        self.store = open_store(fleet.state.store)
        self.control = ControlPlane(fleet, store=self.store, manage=not worker)
        self.control.registry.listen(self._replica_changed)
        # With server.workers > 1 the primary decides lifecycles; workers ask it over a Unix socket.
        self.channel: ChannelServer | None = None
        self.primary: ChannelClient | None = None
        if metrics_dir is not None and worker:
            self.primary = self.control.deployments.primary = ChannelClient(metrics_dir)
        elif metrics_dir is not None:
            self.channel = ChannelServer(self.control.deployments, metrics_dir)
        self.dispatchers: dict[str, Dispatcher] = {}
        targets: dict[str, Target] = {}
        for name, dep in fleet.deployments.items():
            self.dispatchers[name] = Dispatcher(
                name,
                self.control.replicas[name],
                max_concurrency=dep.max_concurrency,
                max_queue=dep.max_queue,
                stale_after=dep.load_metrics.stale_after if dep.load_metrics else None,
            )
            upstream_model = (dep.model or name) if isinstance(dep, OpenAIDeployment) else name
            if isinstance(dep, KubernetesDeployment):  # vLLM serves it as `name` (or a LoRA adapter by its own)
                upstream_model = dep.upstream_model or name
            targets[name] = Target(
                name=name,
                kind=dep.kind,
                upstream_model=upstream_model,
                dispatcher=self.dispatchers[name],
                backend=_backend(
                    dep, max((r.timeout for r in fleet.routes.values() if name in r.deployments), default=60.0)
                ),
                supports_embeddings=dep.supports_embeddings,
            )
        routes = {
            name: Route(
                name,
                route.timeout,
                WeightedChoice(route.deployments),
                sticky=route.sticky.removeprefix("header:") if route.sticky else None,
                strict=route.strict,
                fallbacks=tuple(route.fallbacks) if isinstance(route.fallbacks, list) else (),
            )
            for name, route in fleet.routes.items()
        }
        self.counters = open_counters(fleet.state.counters)
        if not isinstance(self.counters, LocalCounters):  # Redis: each new connection seeds what a restart lost
            self.counters.spent = self._spent_budgets  # type: ignore[attr-defined]
        self.ledger = UsageLedger(self.store, fleet.state.flush_interval)
        owners = ownership(fleet)  # with include:, a team made later gets the platform's routes, not every team's
        everything = frozenset(r for r in fleet.routes if owners[f"routes.{r}"].team is None) if owners else None
        self.directory = Directory(fleet.teams, self.store, fleet.state.refresh_interval, everything)
        self.gate = Gate(self.directory, self.counters, self.ledger)
        obs = fleet.observability
        self.access_log = (
            AccessLog(fleet.server.log_format, content_routes=obs.log_content, redact=obs.redact)
            if fleet.server.access_log
            else None
        )
        router = Router(routes, targets, request_failed=self.control.request_failed,
                        wake=self.control.deployments.wake)  # fmt: skip
        self.proxy = Proxy(
            router, self.metrics, self.gate, max_body_bytes=fleet.server.max_body_bytes,
            body_timeout=fleet.server.body_timeout, write_timeout=fleet.server.write_timeout,
            access_log=self.access_log,
        )  # fmt: skip
        self.metrics.watch_replicas(self.control.registry.all, lambda d: self.dispatchers[d].queued)
        self._publisher = Periodic("metrics snapshot for the other workers", 1.0, self._publish, logger=log)
        self.metrics.watch_wakes(self.control.deployments.wakes)
        self._watch_fleet(router)
        created = int(time.time())
        models = [{"id": n, "object": "model", "created": created, "owned_by": "modelfleet"} for n in routes]
        team_admin = TeamAdmin(self.store, list(routes), fleet.teams, fleet.limits_unsupported)
        admin = AdminAPI(team_admin, self.gate, fleet.auth.admin_key, self.control.deployments)
        self.drain = Drain()
        self.app = create_app(
            self.proxy, metrics=self.metrics, readiness=self.readiness, models=models, cors=fleet.server.cors,
            admin=admin, drain=self.drain, access_log=self.access_log, metrics_key=fleet.auth.metrics_key,
        )  # fmt: skip
        self.app.cleanup_ctx.append(self._lifecycle)

    def _watch_fleet(self, router: Router) -> None:
        """What /metrics reads at scrape time, besides the request counts (observability/)."""
        m, registry, deployments = self.metrics, self.control.registry, self.control.deployments
        m.tallies.update(retries=router.retries, failovers=router.failovers, rate_limited=self.gate.refused,
                         ejections=registry.ejections, readmissions=registry.readmissions)  # fmt: skip

        def deployment_states() -> dict[str, tuple[str, str, bool]]:
            out: dict[str, tuple[str, str, bool]] = {}
            for name, dep in self.fleet.deployments.items():
                want = deployments.desired.get(name)
                window = schedules.window(dep.schedule, time.time()).state
                out[name] = (want.state if want else "running", observed(self.control.replicas[name]),
                             window in (None, "running"))  # fmt: skip
            return out

        def engines() -> dict[tuple[str, str], tuple[float | None, float | None]]:
            return {k: v for s in self.control._scrapers for k, v in s.readings.items()}

        m.state = FleetState(
            registry.all, deployment_states, lambda: {n: c.limits for n, c in self.directory.teams.items()}, engines
        )

    def _replica_changed(self, replica: Replica) -> None:
        dispatcher = self.dispatchers[replica.deployment]
        dispatcher.hand_on()
        dispatcher.fail_waiters()

    async def _lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        obs = self.fleet.observability
        traces = tracing.setup(
            obs.otlp_endpoint, obs.sample_ratio, obs.service_name, _version(), obs.trust_client_sampling
        )
        if traces:
            log.info("tracing: OTLP/HTTP to %s, sampling %g", traces, obs.sample_ratio)
        if self.access_log:
            self.access_log.start()
        if self.metrics.share_dir:
            self._publisher.start()
        if self.channel is not None:
            await self.channel.start()
        await self.directory.start()
        if isinstance(self.counters, LocalCounters):  # Redis counters seed on each new connection
            await self._seed_budgets()
        self.ledger.start()
        await self.control.start()
        yield
        if self.metrics.share_dir:
            await self._publisher.stop()
            try:
                await self._publish()
            except OSError as exc:  # the rest of the shutdown (the last usage flush above all) goes on
                log.warning("could not publish the last metrics snapshot: %s", exc)
        # aiohttp has already drained in-flight requests when cleanup runs: every request is in the ledger.
        await self.ledger.stop()
        await self.directory.stop()
        await self.control.stop()
        if self.channel is not None:
            await self.channel.stop()
        if self.primary is not None:
            await self.primary.aclose()
        await self.counters.aclose()
        await self.store.close()
        if self.access_log:
            await self.access_log.stop()
        for target in self.proxy.targets.values():
            await target.backend.aclose()
        if traces:
            await asyncio.to_thread(tracing.shutdown)

    async def _seed_budgets(self) -> None:
        """Counters may start empty (a restart, memory counters): budgets spent so far come from the ledger."""
        day, month, _, _ = periods(time.time())
        try:
            spent = await self._spent_budgets(day, month)
        except Exception as exc:
            log.error("cannot read spent budgets from the store (%s); budgets count from zero", exc)
            return
        for team, (day_tokens, month_tokens) in spent.items():
            await self.counters.seed(team, day_tokens, month_tokens)

    async def _spent_budgets(self, day: str, month: str) -> dict[str, tuple[int, int]]:
        """Tokens each team with a budget has spent in this UTC day and month, from the usage ledger."""
        budgeted = [c for c in self.directory.teams.values() if c.limits.tokens_per_day or c.limits.tokens_per_month]
        if not budgeted:
            return {}
        today = await self.store.tokens_since(day)
        this_month = await self.store.tokens_since(month + "-01")
        return {c.team: (today.get(c.team, 0), this_month.get(c.team, 0)) for c in budgeted}

    async def _publish(self) -> None:
        await self.metrics.publish()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """A route is ready when a request to it can be answered: by its deployments or its fallbacks'.
        The gateway is ready when any route is.

        A stopped deployment that wakes on request can answer (after its wake), so it counts.
        """

        def servable(d: str) -> bool:
            reps = self.control.replicas[d]
            wakes = self.fleet.deployments[d].wake_on_request and self.dispatchers[d].stopped()
            return wakes or any(r.ready for r in reps)

        deployments = {
            name: any(servable(d) for d, w in route.deployments.items() if w > 0)
            for name, route in self.fleet.routes.items()
        }
        routes = {
            name: deployments[name]
            or any(deployments[fb] for fb in route.fallbacks if isinstance(route.fallbacks, list))
            for name, route in self.fleet.routes.items()
        }
        # Ready when it can answer something: one model that is down must not take the whole gateway out of
        # its load balancer (every gateway shares that model); which routes cannot answer is in the body.
        # `deployments`: each one's state in one word, the rule the CLI and the admin API use (the console's
        # fleet page reads it here when no admin key opens /admin/deployments).
        states = {name: observed(reps) for name, reps in self.control.replicas.items()}
        return any(routes.values()), {"routes": routes, "deployments": states, "not_ready": self.control.not_ready()}


def _version() -> str:
    try:
        return importlib.metadata.version("modelfleet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _backend(dep: Deployment, read_timeout: float) -> Backend:
    """The wire protocol a deployment speaks."""
    if isinstance(dep, SageMakerDeployment):
        from modelfleet.backends.sagemaker import SageMakerBackend

        return SageMakerBackend(dep, read_timeout)
    api_key = dep.api_key if isinstance(dep, OpenAIDeployment) else None
    return OpenAIHTTPBackend(api_key.get_secret_value() if api_key else None)
