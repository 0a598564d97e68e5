"""Dollars per month per deployment and per team: price table x instances x the hours schedules imply.

A deployment is billed when it names an instance type: a SageMaker deployment's `create.instance_type`
(x `instance_count`), an OpenAI-compatible deployment's `runs_on.instance_type` (x one per URL). Other
deployments (the embedded engine, servers billed elsewhere) are listed at $0 with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelfleet.config.include import ownership
from modelfleet.config.schema import Deployment, Fleet, OpenAIDeployment, SageMakerDeployment
from modelfleet.cost.hours import Hours, hours_between
from modelfleet.cost.prices import PriceTable, Service, UnknownPrice

UNATTRIBUTED = "(no team)"


@dataclass(frozen=True, slots=True)
class Billing:
    service: Service
    instance_type: str
    region: str
    count: int


def billing(dep: Deployment) -> Billing | None:
    if isinstance(dep, SageMakerDeployment) and dep.create is not None:
        return Billing("sagemaker", dep.create.instance_type, dep.region, dep.create.instance_count)
    if isinstance(dep, OpenAIDeployment) and dep.runs_on is not None:
        return Billing("ec2", dep.runs_on.instance_type, dep.runs_on.region, len(dep.urls))
    return None


def team_of(fleet: Fleet, name: str) -> str | None:
    """The team that owns a deployment: its team file, else its `team` tag."""
    owner = ownership(fleet).get(f"deployments.{name}")
    if owner is not None and owner.team is not None:
        return owner.team
    team = deployment_tags(fleet, name, with_team=False).get("team")
    if not isinstance(team, str) or not team.strip():
        return None
    by_lower = {t.lower(): t for t in fleet.teams}  # `Research ` is team research: its tags and guardrails apply
    return by_lower.get(team.strip().lower(), team.strip())


def deployment_tags(fleet: Fleet, name: str, *, with_team: bool = True) -> dict[str, str]:
    """The effective tags its resources carry: its own, with its team's tags over them.

    A deployment cannot override what its team's tags say (the platform sets those, or lets the
    team's own file set them), and a team file's deployment is tagged with that team, whatever it says."""
    dep = fleet.deployments[name]
    own: dict[str, str] = {}
    if isinstance(dep, SageMakerDeployment) and dep.create is not None:
        own = dict(dep.create.tags)
    elif isinstance(dep, OpenAIDeployment) and dep.runs_on is not None:
        own = dict(dep.runs_on.tags)
    if not with_team:
        return own
    team = team_of(fleet, name)
    team_tags = dict(fleet.teams[team].tags) if team in fleet.teams else {}
    owner = ownership(fleet).get(f"deployments.{name}")
    owned = {"team": owner.team} if owner is not None and owner.team is not None else {}
    return {**own, **team_tags, **owned}


@dataclass
class DeploymentCost:
    name: str
    team: str | None
    kind: str
    billing: Billing | None
    hourly: float | None  # per instance
    hours: Hours
    note: str = ""

    @property
    def unpriced(self) -> bool:
        """Billed by instance, but the price table has no price for it: unknown, never $0."""
        return self.billing is not None and self.hourly is None

    def usd(self, hours: float) -> float:
        return 0.0 if self.hourly is None or self.billing is None else self.hourly * self.billing.count * hours

    @property
    def always_on_usd(self) -> float:
        return self.usd(self.hours.always_on)

    @property
    def most_usd(self) -> float:
        return self.usd(self.hours.most)

    @property
    def least_usd(self) -> float:
        return self.usd(self.hours.least)

    def as_dict(self) -> dict[str, Any]:
        b = self.billing
        return {
            "deployment": self.name,
            "team": self.team,
            "kind": self.kind,
            "service": b and b.service,
            "instance_type": b and b.instance_type,
            "region": b and b.region,
            "instances": b and b.count,
            "hourly_usd": self.hourly,
            "priced": not self.unpriced,
            "hours": {
                "always_on": round(self.hours.always_on, 4),
                "scheduled": round(self.hours.most, 4),
                "least": round(self.hours.least, 4),
            },
            "usd": {
                "always_on": round(self.always_on_usd, 2),
                "scheduled": round(self.most_usd, 2),
                "least": round(self.least_usd, 2),
            },
            "note": self.note,
        }


@dataclass
class FleetCost:
    start: datetime
    end: datetime
    prices: PriceTable
    deployments: list[DeploymentCost] = field(default_factory=list)

    def by_team(self) -> dict[str, dict[str, float]]:
        teams: dict[str, dict[str, float]] = {}
        for d in self.deployments:
            t = teams.setdefault(d.team or UNATTRIBUTED, {"always_on": 0.0, "scheduled": 0.0, "least": 0.0})
            t["always_on"] += d.always_on_usd
            t["scheduled"] += d.most_usd
            t["least"] += d.least_usd
        return teams

    def unpriced_by_team(self) -> dict[str, list[str]]:
        """Billed deployments the price table has no price for: team -> `name (type in region)`."""
        out: dict[str, list[str]] = {}
        for d in self.deployments:
            b = d.billing
            if d.unpriced and b is not None:
                out.setdefault(d.team or UNATTRIBUTED, []).append(f"{d.name} ({b.instance_type} in {b.region})")
        return out

    @property
    def warnings(self) -> list[str]:
        """What makes the totals too low: deployments billed by instance with no known price (not $0)."""
        return [
            f"{d.name}: {d.note}; its cost is unknown and left out of the totals"
            for d in self.deployments
            if d.unpriced
        ]

    def as_dict(self) -> dict[str, Any]:
        total = {k: round(sum(t[k] for t in self.by_team().values()), 2) for k in ("always_on", "scheduled", "least")}
        return {
            "period": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "prices": {"source": self.prices.source, "as_of": self.prices.as_of, "table": self.prices.path},
            "deployments": [d.as_dict() for d in self.deployments],
            "teams": {t: {k: round(v, 2) for k, v in usd.items()} for t, usd in sorted(self.by_team().items())},
            "total_usd": total,
            "unpriced": [d.name for d in self.deployments if d.unpriced],
            "warnings": self.warnings,
        }


def month_period(month: str | None = None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """A calendar month in UTC, `2026-11` or (default) the current one."""
    if month is None:
        now = now or datetime.now(UTC)
        year, mon = now.year, now.month
    else:
        try:
            year, mon = (int(p) for p in month.split("-"))
            datetime(year, mon, 1)
        except ValueError:
            raise ValueError(f"expected a month such as 2026-11, got {month!r}") from None
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return start, end


def deployment_cost(
    fleet: Fleet, name: str, start: datetime, end: datetime, prices: PriceTable, hours: Hours | None = None
) -> DeploymentCost:
    """`hours`: when the caller has them already (chargeback reads each schedule once)."""
    dep = fleet.deployments[name]
    hours = hours or hours_between(dep.schedule, start, end)
    bill = billing(dep)
    hourly, note = None, ""
    if bill is None:
        note = "not billed by instance: no create.instance_type / runs_on.instance_type"
    else:
        try:
            hourly = prices.hourly(bill.service, bill.region, bill.instance_type)
        except UnknownPrice as exc:
            note = str(exc)
    return DeploymentCost(name, team_of(fleet, name), dep.kind, bill, hourly, hours, note)


def estimate(fleet: Fleet, start: datetime, end: datetime, prices: PriceTable) -> FleetCost:
    cost = FleetCost(start, end, prices)
    cost.deployments = [deployment_cost(fleet, n, start, end, prices) for n in fleet.deployments]
    return cost
