"""Further rules without code: JMESPath over the fleet document or the plan's resources.

rules:
  - id: route-timeout-cap
    each: routes                    # an object: each value, named routes.<key>; a list: each item
    require: "timeout <= `120`"
    fix: set the route's timeout to 120s or less
  - id: no-public-buckets
    on: plan
    each: resources                 # [{address, type, name, values}]
    where: "type == 'aws_s3_bucket_public_access_block'"
    require: "values.block_public_acls"
    fix: block public ACLs
"""

from __future__ import annotations

from typing import Any

import jmespath

from modelfleet.config.include import ownership
from modelfleet.config.policy import Rule
from modelfleet.config.schema import Fleet
from modelfleet.policy.violation import Violation


def fleet_document(fleet: Fleet) -> dict[str, Any]:
    """The fleet as rules see it: every default filled in; secrets masked by their schema mark (set or null)."""
    doc = fleet.model_dump(mode="json", exclude={"policy", "include"})
    for team in doc.get("teams", {}).values():
        team["keys"] = len(team.get("keys") or [])
    doc["state"] = {k: v for k, v in doc.get("state", {}).items() if k != "store"}
    return doc


def plan_document(plan: dict[str, Any]) -> dict[str, Any]:
    from modelfleet.policy.plan import provider_regions, resources

    return {
        "resources": [
            {"address": r["address"], "type": r["type"], "name": r.get("name"), "values": r.get("values") or {}}
            for r in resources(plan)
        ],
        "regions": provider_regions(plan),
        "variables": {k: v.get("value") for k, v in plan.get("variables", {}).items()},
    }


def check_rules(
    rules: list[Rule], doc: dict[str, Any], *, scope: str, fleet: Fleet | None, file: str | None
) -> list[Violation]:
    owners = ownership(fleet) if fleet is not None else {}
    out: list[Violation] = []
    for rule in rules:
        if rule.scope != scope:
            continue
        selected = jmespath.search(rule.each, doc)
        if isinstance(selected, dict):
            items = [(f"{rule.each}.{k}", v) for k, v in selected.items()]
        elif isinstance(selected, list):
            items = [(_name(rule.each, i, v), v) for i, v in enumerate(selected)]
        else:
            continue
        for where, item in items:
            if rule.where is not None and not jmespath.search(rule.where, item):
                continue
            got = jmespath.search(rule.require, item)
            if not got:
                owner = owners.get(".".join(where.split(".")[:2]))
                out.append(
                    Violation(rule.id, where, f"`{rule.require}` is {got!r}", rule.fix, owner.file if owner else file)
                )
    return out


def _name(each: str, i: int, item: Any) -> str:
    if isinstance(item, dict) and "address" in item:
        return str(item["address"])
    return f"{each}[{i}]"
