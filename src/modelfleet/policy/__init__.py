"""Guardrails: the fleet file's `policy:` checked against the (merged) fleet and any Terraform plan.

violations = check(fleet, plan=json.load(open("plan.json")), plan_file="plan.json")
enforce(fleet)      # raises PolicyError: what `modelfleet deploy` calls before it renders or applies
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modelfleet.config.schema import Fleet
from modelfleet.cost.model import month_period
from modelfleet.cost.prices import PriceTable, load_prices
from modelfleet.errors import ModelfleetError
from modelfleet.policy.custom import check_rules, fleet_document, plan_document
from modelfleet.policy.fleet import check_fleet
from modelfleet.policy.plan import check_plan
from modelfleet.policy.violation import RULES, Violation

__all__ = ["RULES", "PolicyError", "Violation", "check", "enforce"]


class PolicyError(ModelfleetError):
    """The fleet (or its plan) breaks the policy; `violations` says where and how to fix it."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = "\n".join(f"  - {v}" for v in violations)
        super().__init__(f"the fleet fails its policy: {len(violations)} violation(s)\n{lines}")


def check(
    fleet: Fleet,
    plan: dict[str, Any] | None = None,
    *,
    plan_file: str | None = None,
    prices: PriceTable | None = None,
    period: tuple[datetime, datetime] | None = None,
) -> list[Violation]:
    prices = prices or load_prices()
    period = period or month_period()
    found = check_fleet(fleet, prices, period)
    found += check_rules(fleet.policy.rules, fleet_document(fleet), scope="fleet", fleet=fleet, file=None)
    if plan is not None:
        found += check_plan(plan, fleet, prices, plan_file)
        found += check_rules(fleet.policy.rules, plan_document(plan), scope="plan", fleet=None, file=plan_file)
    return found


def enforce(fleet: Fleet, plan: dict[str, Any] | None = None, *, plan_file: str | None = None) -> None:
    """Raise PolicyError if the fleet (and the plan, if given) breaks the policy."""
    found = check(fleet, plan, plan_file=plan_file)
    if found:
        raise PolicyError(found)
