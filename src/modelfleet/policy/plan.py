"""Policy over `terraform show -json` output: planned resources, the AWS provider's region, the tags.

Reads `planned_values` (what the resources will be, default_tags merged into `tags_all`),
`configuration` (the provider's region and which resource refers to which) and `variables`. Works on
any plan, hand-written Terraform included. Monthly cost here is always-on (730 h): a plan has no schedule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from modelfleet.config.schema import Fleet
from modelfleet.cost.prices import PriceTable, UnknownPrice
from modelfleet.policy.guard import (
    PUBLIC,
    allowed_types,
    family,
    is_gpu,
    opens_ssh,
    outside_production,
    type_allowed,
)
from modelfleet.policy.violation import Violation

HOURS_PER_MONTH = 730


def resources(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every managed resource the plan will leave in place, root and child modules."""

    def walk(module: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for r in module.get("resources", []):
            if r.get("mode", "managed") == "managed":
                yield r
        for child in module.get("child_modules", []):
            yield from walk(child)

    return list(walk(plan.get("planned_values", {}).get("root_module", {})))


def provider_regions(plan: dict[str, Any]) -> dict[str, str]:
    """`aws` / `aws.eu` -> its region, from a constant or a variable."""
    out: dict[str, str] = {}
    variables = plan.get("variables", {})
    for key, cfg in plan.get("configuration", {}).get("provider_config", {}).items():
        if cfg.get("name") != "aws":
            continue
        expr = cfg.get("expressions", {}).get("region", {})
        if "constant_value" in expr:
            out[key] = str(expr["constant_value"])
        for ref in expr.get("references", []):
            if ref.startswith("var.") and ref[4:] in variables:
                out[key] = str(variables[ref[4:]].get("value"))
                break
    return out


def _references(plan: dict[str, Any]) -> dict[str, set[str]]:
    """Resource address -> the addresses its configuration refers to (root module)."""
    refs: dict[str, set[str]] = {}

    def collect(value: Any, into: set[str]) -> None:
        if isinstance(value, dict):
            for r in value.get("references", []):
                if m := re.match(r"^([a-z0-9_]+\.[A-Za-z0-9_-]+)", r):
                    into.add(m.group(1))
            for v in value.values():
                collect(v, into)
        elif isinstance(value, list):
            for v in value:
                collect(v, into)

    for r in plan.get("configuration", {}).get("root_module", {}).get("resources", []):
        collect(r.get("expressions", {}), refs.setdefault(r["address"], set()))
    return refs


def _tags(r: dict[str, Any]) -> dict[str, str] | None:
    values = r.get("values") or {}
    if r["type"] == "aws_autoscaling_group":
        return {t["key"]: t["value"] for t in values.get("tag") or []}
    if "tags_all" in values:
        return dict(values.get("tags_all") or {})
    if "tags" in values:  # tags_all not known until apply: the resource's own tags are what we know
        return dict(values.get("tags") or {})
    return None


def _group(address: str) -> str:
    return re.sub(r"\[[^\]]*\]$", "", address)  # aws_instance.vllm[2] -> aws_instance.vllm


def check_plan(plan: dict[str, Any], fleet: Fleet, prices: PriceTable, file: str | None) -> list[Violation]:
    policy = fleet.policy
    out: list[Violation] = []
    top = policy.overridden(None, None)

    def add(rule: str, where: str, actual: str, fix: str) -> None:
        out.append(Violation(rule, where, actual, fix, file))

    regions = provider_regions(plan)
    for key, region in regions.items():
        if top.regions is not None and region not in top.regions:
            add("region-allowed", f"provider.{key}.region", region, f"use one of: {', '.join(top.regions)}")
    region = regions.get("aws", next(iter(regions.values()), "us-east-1"))

    all_resources = resources(plan)
    by_address = {r["address"]: r for r in all_resources}
    refs = _references(plan)
    counted: dict[str, tuple[int, str | None, str]] = {}  # group -> (instances, team, where)
    team_usd: dict[str, float] = {}
    team_instances: dict[str, int] = {}

    def price(service: str, itype: str) -> float:
        try:
            return prices.hourly(service, region, itype)  # type: ignore[arg-type]
        except UnknownPrice:
            return 0.0

    for r in all_resources:
        address, kind, values = r["address"], r["type"], r.get("values") or {}
        tags = _tags(r)
        team = (tags or {}).get("team")
        env = (tags or {}).get("environment")
        g = policy.overridden(team, env)
        if tags is not None:
            missing = [t for t in g.required_tags or [] if t not in tags]
            if missing:
                add(
                    "required-tags",
                    f"{address}.tags",
                    f"missing {', '.join(missing)}",
                    f"add {', '.join(missing)} to the resource's tags or the provider's default_tags",
                )

        machines: list[tuple[str, str, int, str]] = []  # (where, instance type, count, service)
        if kind == "aws_sagemaker_endpoint_configuration":
            for i, v in enumerate(values.get("production_variants") or []):
                if v.get("instance_type"):
                    n = int(v.get("initial_instance_count") or 1)
                    machines.append((f"{address}.production_variants[{i}]", v["instance_type"], n, "sagemaker"))
        elif kind in ("aws_instance", "aws_launch_template") and values.get("instance_type"):
            n = 1 if kind == "aws_instance" else 0  # a template runs nothing itself: its group counts
            machines.append((address, values["instance_type"], n, "ec2"))
        elif kind == "aws_eks_node_group":
            size = (values.get("scaling_config") or [{}])[0]
            for itype in values.get("instance_types") or []:
                machines.append((address, itype, int(size.get("max_size") or 0), "ec2"))
        elif kind == "aws_autoscaling_group":
            n = max(int(values.get("desired_capacity") or 0), int(values.get("max_size") or 0))
            for ref in refs.get(address, ()):
                template = by_address.get(ref)
                if template is not None and template["type"] == "aws_launch_template":
                    itype = template["values"].get("instance_type")
                    if itype:
                        machines.append((address, itype, n, "asg"))

        for where, itype, n, service in machines:
            if service != "asg" and not type_allowed(itype, g):
                add("instance-type-allowed", f"{where}.instance_type", itype, f"use one of: {allowed_types(g)}")
            if service != "ec2" or kind == "aws_instance":
                group = _group(address) if kind == "aws_instance" else where
                prev = counted.get(group, (0, team, where))
                counted[group] = (prev[0] + n, team, group)
            if team is not None:
                team_instances[team] = team_instances.get(team, 0) + n
                hourly = price("sagemaker" if service == "sagemaker" else "ec2", itype)
                team_usd[team] = team_usd.get(team, 0.0) + hourly * n * HOURS_PER_MONTH
            if service == "asg" and is_gpu(itype, g) and outside_production(env, g) and g.gpu_schedule_required:
                scheduled = any(
                    address in refs.get(a, ()) for a, s in by_address.items() if s["type"] == "aws_autoscaling_schedule"
                )
                if not scheduled:
                    add(
                        "gpu-schedule-required",
                        address,
                        f"{itype} is a GPU instance ({family(itype)}) in environment {env or '(none)'} "
                        "with no aws_autoscaling_schedule",
                        "add aws_autoscaling_schedule resources that scale it to 0 off hours, or tag it "
                        "environment: production",
                    )

        if g.no_public_ssh is not False:
            for where, open_ in _ssh_rules(address, kind, values):
                add("no-public-ssh", where, open_, "allow port 22 from your own network only (or use SSM)")
        if g.store_encrypted is not False:
            if kind in ("aws_db_instance", "aws_rds_cluster") and not values.get("storage_encrypted"):
                add(
                    "store-encrypted",
                    f"{address}.storage_encrypted",
                    str(values.get("storage_encrypted")),
                    "set storage_encrypted = true",
                )
            if kind == "aws_elasticache_replication_group" and str(
                values.get("at_rest_encryption_enabled")
            ).lower() not in ("true",):
                add(
                    "store-encrypted",
                    f"{address}.at_rest_encryption_enabled",
                    str(values.get("at_rest_encryption_enabled")),
                    "set at_rest_encryption_enabled = true",
                )

    for n, team, where in counted.values():
        g = policy.overridden(team, None)
        if g.max_instances_per_deployment is not None and n > g.max_instances_per_deployment:
            add("max-instances-per-deployment", where, f"{n} instances", f"at most {g.max_instances_per_deployment}")
    for team, n in team_instances.items():
        g = policy.overridden(team, None)
        if g.max_instances_per_team is not None and n > g.max_instances_per_team:
            add(
                "max-instances-per-team",
                f"tag team={team}",
                f"{n} instances in this plan",
                f"at most {g.max_instances_per_team}",
            )
    for team, usd in team_usd.items():
        g = policy.overridden(team, None)
        if g.max_monthly_cost_per_team is not None and usd > g.max_monthly_cost_per_team:
            add(
                "max-monthly-cost-per-team",
                f"tag team={team}",
                f"${usd:,.2f} a month always-on ({HOURS_PER_MONTH} h; prices as of {prices.as_of}, {region})",
                f"at most ${g.max_monthly_cost_per_team:,.2f}: smaller or fewer instances",
            )
    return out


def _ssh_rules(address: str, kind: str, values: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if kind == "aws_security_group":
        for i, rule in enumerate(values.get("ingress") or []):
            cidrs = [*(rule.get("cidr_blocks") or []), *(rule.get("ipv6_cidr_blocks") or [])]
            public = [c for c in cidrs if c in PUBLIC]
            if public and opens_ssh(rule.get("from_port"), rule.get("to_port"), rule.get("protocol")):
                yield f"{address}.ingress[{i}]", f"port 22 open to {', '.join(public)}"
    elif kind == "aws_security_group_rule" and values.get("type") == "ingress":
        cidrs = [*(values.get("cidr_blocks") or []), *(values.get("ipv6_cidr_blocks") or [])]
        public = [c for c in cidrs if c in PUBLIC]
        if public and opens_ssh(values.get("from_port"), values.get("to_port"), values.get("protocol")):
            yield address, f"port 22 open to {', '.join(public)}"
    elif kind == "aws_vpc_security_group_ingress_rule":
        public = [c for c in (values.get("cidr_ipv4"), values.get("cidr_ipv6")) if c in PUBLIC]
        if public and opens_ssh(values.get("from_port"), values.get("to_port"), values.get("ip_protocol")):
            yield address, f"port 22 open to {', '.join(public)}"
