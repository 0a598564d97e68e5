"""The fleet file's `policy:` section: guardrails checked by `modelfleet policy check` (see modelfleet/policy/).

    policy:
      instance_types: [ml.g5.*, g5.*, c7i.*]      # allowed, fnmatch patterns
      gpu_families: [g5, g6, g4dn, p4d, inf2]     # which families count as GPU (for the schedule rule)
      regions: [us-east-1, eu-central-1]
      required_tags: [team, cost-center, environment]
      max_instances_per_deployment: 4
      max_instances_per_team: 8
      max_monthly_cost_per_team: 5000             # USD, from `modelfleet cost`
      gpu_schedule_required: true                 # GPU deployments outside production need a schedule
      teams: {search: {max_monthly_cost_per_team: 2000}}
      environments: {dev: {max_instances_per_deployment: 1}}
      rules:                                      # further rules, no code: JMESPath
        - id: route-timeout-cap
          each: routes
          require: "timeout <= `120`"
          fix: set the route's timeout to 120s or less

Per-team and per-environment sections override the fleet-wide values they set; a deployment's
environment is its `environment` tag (trimmed, any case).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_GPU_FAMILIES = ["g4dn", "g5", "g6", "g6e", "gr6", "p3", "p4d", "p4de", "p5", "p5e", "inf1", "inf2", "trn1"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Guardrails(_Section):
    """The rules that can be set fleet-wide, per team and per environment; unset = not checked (or the default)."""

    instance_types: list[str] | None = Field(None, description="allowed instance types (fnmatch: ml.g5.*)")
    gpu_families: list[str] | None = Field(None, description="families that are GPU/accelerator instances")
    regions: list[str] | None = Field(None, description="allowed AWS regions")
    required_tags: list[str] | None = Field(None, description="tags billed deployments and plan resources carry")
    max_instances_per_deployment: int | None = Field(None, ge=0)
    max_instances_per_team: int | None = Field(None, ge=0)
    max_monthly_cost_per_team: float | None = Field(None, ge=0, description="USD per month")
    gpu_schedule_required: bool | None = Field(None, description="GPU deployments outside production need one")
    production_environments: list[str] | None = Field(None, description="default: [production, prod]")
    no_public_ssh: bool | None = Field(None, description="default true: no port 22 open to 0.0.0.0/0 or ::/0")
    store_encrypted: bool | None = Field(None, description="default true: databases and caches encrypted at rest")


class Rule(_Section):
    """A rule written in JMESPath: every item `each` selects (where `where` holds) must satisfy `require`."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    scope: Literal["fleet", "plan"] = Field("fleet", description="the fleet document, or the plan's resources")
    each: str = Field(description="JMESPath selecting an object (items named by key) or a list")
    where: str | None = Field(None, description="JMESPath filter on each item")
    require: str = Field(description="JMESPath that must be truthy for each item")
    fix: str = Field(description="what to change, shown with each violation")
    description: str = ""

    @field_validator("each", "where", "require")
    @classmethod
    def _compiles(cls, expr: str | None) -> str | None:
        if expr is None:
            return expr
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            jmespath.compile(expr)
        except JMESPathError as exc:
            raise ValueError(f"expected a JMESPath expression, got {expr!r}: {exc}") from None
        return expr


class Policy(Guardrails):
    teams: dict[str, Guardrails] = Field({}, description="per-team overrides")
    environments: dict[str, Guardrails] = Field({}, description="per-environment overrides")
    rules: list[Rule] = []

    def overridden(self, team: str | None, environment: str | None) -> Guardrails:
        """The fleet-wide values, then the environment's, then the team's (the most specific wins)."""
        values = Guardrails.model_validate(self.model_dump(include=set(Guardrails.model_fields))).model_dump()
        wanted = (environment or "").strip().lower()  # `Dev ` is the dev environment, not none at all
        env = next((s for name, s in self.environments.items() if name.strip().lower() == wanted), None)
        for section in (env if wanted else None, self.teams.get(team or "")):
            if section is not None:
                values.update(section.model_dump(include=section.model_fields_set))
        return Guardrails(**values)
