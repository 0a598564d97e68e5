"""A violation names where (fleet path or plan resource), the rule, the actual value and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

RULES: dict[str, str] = {
    "instance-type-allowed": "Only the instance types listed in policy.instance_types",
    "region-allowed": "Only the regions listed in policy.regions",
    "required-tags": "Billed deployments and taggable plan resources carry the tags in policy.required_tags",
    "max-instances-per-deployment": "At most policy.max_instances_per_deployment instances or replicas per deployment",
    "max-instances-per-team": "At most policy.max_instances_per_team instances or replicas per team",
    "max-monthly-cost-per-team": "A team's fleet costs at most policy.max_monthly_cost_per_team USD a month",
    "gpu-schedule-required": "GPU deployments outside production have a schedule (stop or idle stop)",
    "no-public-ssh": "No security group opens port 22 to 0.0.0.0/0 or ::/0",
    "store-encrypted": "Databases and caches (the store, the counters) are encrypted at rest",
}


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    where: str  # a fleet path (deployments.x.create.instance_type) or a plan resource address
    actual: str
    fix: str
    file: str | None = None  # the fleet or plan file it is in
    line: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def __str__(self) -> str:
        at = f"{self.file}{f':{self.line}' if self.line else ''}: " if self.file else ""
        return f"{at}{self.where}: [{self.rule}] {self.actual}; fix: {self.fix}"
