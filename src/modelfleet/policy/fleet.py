"""Policy over a (merged) fleet: each deployment under its team's and environment's guardrails."""

from __future__ import annotations

from datetime import datetime

from modelfleet.config.include import ownership
from modelfleet.config.schema import Deployment, Fleet, OpenAIDeployment, SageMakerDeployment
from modelfleet.cost.model import UNATTRIBUTED, billing, deployment_tags, estimate, team_of
from modelfleet.cost.prices import PriceTable
from modelfleet.policy.guard import allowed_types, family, is_gpu, outside_production, type_allowed
from modelfleet.policy.tags import missing as missing_tags
from modelfleet.policy.tags import value as tag_value
from modelfleet.policy.violation import Violation


def instances(dep: Deployment) -> tuple[int, str]:
    """How many instances or replicas it runs, and the field that says so."""
    if isinstance(dep, SageMakerDeployment):
        return (dep.create.instance_count, "create.instance_count") if dep.create else (0, "create")
    if isinstance(dep, OpenAIDeployment):
        return len(dep.urls), "urls"
    return dep.replicas, "replicas"  # the embedded engine's processes, a Kubernetes Deployment's pods


def check_fleet(fleet: Fleet, prices: PriceTable, period: tuple[datetime, datetime]) -> list[Violation]:
    owners = ownership(fleet)
    policy = fleet.policy
    out: list[Violation] = []
    per_team: dict[str, int] = {}

    def add(rule: str, where: str, actual: str, fix: str, owner_key: str | None = None) -> None:
        owner = owners.get(owner_key or "")
        out.append(Violation(rule, where, actual, fix, owner.file if owner else None))

    for name, dep in fleet.deployments.items():
        team = team_of(fleet, name)
        tags = deployment_tags(fleet, name)
        env = tag_value(tags, "environment")
        g = policy.overridden(team, env)
        at, key = f"deployments.{name}", f"deployments.{name}"
        bill = billing(dep)
        if bill is not None:
            base = f"{at}.create" if isinstance(dep, SageMakerDeployment) else f"{at}.runs_on"
            if not type_allowed(bill.instance_type, g):
                add(
                    "instance-type-allowed",
                    f"{base}.instance_type",
                    bill.instance_type,
                    f"use one of: {allowed_types(g)}",
                    key,
                )
            if g.regions is not None and bill.region not in g.regions and not isinstance(dep, SageMakerDeployment):
                add("region-allowed", f"{base}.region", bill.region, f"use one of: {', '.join(g.regions)}", key)
            wrong = missing_tags(g.required_tags, tags)
            if wrong:
                add(
                    "required-tags",
                    f"{base}.tags",
                    wrong,
                    f"give {', '.join(g.required_tags or [])} a value in {base}.tags or in the team's tags",
                    key,
                )
            sched = dep.schedule
            stops = sched is not None and (sched.stop is not None or sched.idle_stop_after is not None)
            if g.gpu_schedule_required and is_gpu(bill.instance_type, g) and outside_production(env, g) and not stops:
                add(
                    "gpu-schedule-required",
                    f"{at}.schedule",
                    f"{bill.instance_type} is a GPU instance ({family(bill.instance_type)}) in environment "
                    f"{env or '(none)'} with no stop or idle stop",
                    "add a schedule with stop: (cron) or idle_stop_after:, or tag it environment: production",
                    key,
                )
        if isinstance(dep, SageMakerDeployment) and g.regions is not None and dep.region not in g.regions:
            # with or without `create`: the region is where the prompts go, whoever made the endpoint
            add("region-allowed", f"{at}.region", dep.region, f"use one of: {', '.join(g.regions)}", key)
        count, field = instances(dep)
        if g.max_instances_per_deployment is not None and count > g.max_instances_per_deployment:
            add(
                "max-instances-per-deployment",
                f"{at}.{field}",
                f"{count} instances",
                f"at most {g.max_instances_per_deployment}",
                key,
            )
        per_team[team or UNATTRIBUTED] = per_team.get(team or UNATTRIBUTED, 0) + count

    for team, count in per_team.items():
        g = policy.overridden(team, None)
        if team != UNATTRIBUTED and g.max_instances_per_team is not None and count > g.max_instances_per_team:
            add(
                "max-instances-per-team",
                f"teams.{team}",
                f"{count} instances across its deployments",
                f"at most {g.max_instances_per_team}: fewer replicas or instance_count",
                f"teams.{team}",
            )

    if any(policy.overridden(t, None).max_monthly_cost_per_team is not None for t in [*fleet.teams, None]):
        cost = estimate(fleet, *period, prices)
        month = period[0].strftime("%Y-%m")
        unpriced = cost.unpriced_by_team()
        for team, usd in cost.by_team().items():
            g = policy.overridden(team, None)
            limit = g.max_monthly_cost_per_team
            if team == UNATTRIBUTED or limit is None:
                continue
            if usd["scheduled"] > limit:
                add(
                    "max-monthly-cost-per-team",
                    f"teams.{team}",
                    f"${usd['scheduled']:,.2f} in {month} (scheduled hours; prices as of {prices.as_of})",
                    f"at most ${limit:,.2f}: smaller instances, fewer of them, or shorter schedules "
                    "(see modelfleet cost)",
                    f"teams.{team}",
                )
            elif unpriced.get(team):  # an unknown price is no $0: the cap cannot be shown to hold
                add(
                    "max-monthly-cost-per-team",
                    f"teams.{team}",
                    f"no price for {', '.join(unpriced[team])} (prices as of {prices.as_of}): the cap of "
                    f"${limit:,.2f} cannot be checked; the priced part is ${usd['scheduled']:,.2f} in {month}",
                    "use a priced instance type, or a price table that has it (modelfleet cost prices --refresh, "
                    "then --prices FILE)",
                    f"teams.{team}",
                )
    return out
