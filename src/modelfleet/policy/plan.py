"""Policy over `terraform show -json` output: planned resources, the AWS provider's region, the tags.

Reads `planned_values` (what the resources will be, default_tags merged into `tags_all`; root and
child modules), `resource_changes` (which values are known only after apply: an instance type, a tag
or a CIDR Terraform cannot tell yet cannot pass policy), `configuration` (the providers' regions and
default tags, and which resource refers to which, in every module) and `variables`. Works on any
plan, hand-written Terraform included. Monthly cost here is always-on (730 h): a plan has no schedule.
An instance type the price table does not know is never $0: under a cost cap it fails policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from modelfleet.config.schema import Fleet
from modelfleet.cost.prices import PriceTable, UnknownPrice
from modelfleet.policy import ssh
from modelfleet.policy.guard import allowed_types, family, is_gpu, opens_ssh, outside_production, type_allowed
from modelfleet.policy.launchers import Machine, group, machines, unknown
from modelfleet.policy.tags import missing as missing_tags
from modelfleet.policy.tags import value as tag_value
from modelfleet.policy.violation import Violation

HOURS_PER_MONTH = 730
TEMPLATES = ("aws_launch_template", "aws_launch_configuration")
STORES = ("aws_db_instance", "aws_rds_cluster", "aws_docdb_cluster", "aws_neptune_cluster")  # storage_encrypted


def resources(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every managed resource the plan will leave in place, root and child modules."""

    def walk(module: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for r in module.get("resources") or []:
            if r.get("mode", "managed") == "managed":
                yield r
        for child in module.get("child_modules") or []:
            yield from walk(child)

    return list(walk((plan.get("planned_values") or {}).get("root_module") or {}))


UNKNOWN_REGION = ""  # a provider whose region the plan does not say (a local, an expression, AWS_REGION)


def provider_regions(plan: dict[str, Any]) -> dict[str, str]:
    """`aws` / `aws.eu` / `module.x:aws` -> its region, from a constant or a variable; UNKNOWN_REGION when the
    plan does not say it (policy cannot vouch for a region it cannot see). No provider block at all, with AWS
    resources planned, is the implicit `aws` provider, its region from the environment: unknown too."""
    out: dict[str, str] = {}
    variables = plan.get("variables") or {}
    for key, cfg in ((plan.get("configuration") or {}).get("provider_config") or {}).items():
        if cfg.get("name") != "aws":
            continue
        expr = (cfg.get("expressions") or {}).get("region") or {}
        out[key] = UNKNOWN_REGION
        if "constant_value" in expr:
            out[key] = str(expr["constant_value"])
        for ref in expr.get("references") or []:
            if ref.startswith("var.") and ref[4:] in variables:
                out[key] = str(variables[ref[4:]].get("value"))
                break
    if not out and any(str(r.get("type", "")).startswith("aws_") for r in resources(plan)):
        out["aws"] = UNKNOWN_REGION
    return out


def _default_tags(plan: dict[str, Any]) -> dict[str, str]:
    cfg = ((plan.get("configuration") or {}).get("provider_config") or {}).get("aws") or {}
    blocks = (cfg.get("expressions") or {}).get("default_tags") or []
    tags = (blocks[0].get("tags") or {}) if blocks and isinstance(blocks[0], dict) else {}
    value = tags.get("constant_value")
    return dict(value) if isinstance(value, dict) else {}


def _config_references(plan: dict[str, Any]) -> dict[str, set[str]]:
    """Configuration address (module.x.aws_y.z, no indexes) -> the addresses it refers to, in every module."""
    refs: dict[str, set[str]] = {}

    def collect(value: Any, prefix: str, into: set[str]) -> None:
        if isinstance(value, dict):
            for r in value.get("references") or []:
                if m := re.match(r"^([a-z0-9_]+\.[A-Za-z0-9_-]+)", str(r)):
                    into.add(prefix + m.group(1))
            for v in value.values():
                collect(v, prefix, into)
        elif isinstance(value, list):
            for v in value:
                collect(v, prefix, into)

    def walk(module: dict[str, Any], prefix: str) -> None:
        for r in module.get("resources") or []:
            if isinstance(r, dict) and "address" in r:
                collect(r.get("expressions") or {}, prefix, refs.setdefault(prefix + str(r["address"]), set()))
        for name, call in (module.get("module_calls") or {}).items():
            if isinstance(call, dict):
                walk(call.get("module") or {}, f"{prefix}module.{name}.")

    walk((plan.get("configuration") or {}).get("root_module") or {}, "")
    return refs


def _config_address(address: str) -> str:
    return re.sub(r"\[[^\]]*\]", "", address)  # module.gpu[0].aws_instance.x[2] -> module.gpu.aws_instance.x


def _tags(r: dict[str, Any], au: Any, defaults: dict[str, str]) -> tuple[dict[str, Any], set[str] | None] | None:
    """The resource's effective tags and the ones unknown until apply (None: any of them may be); None: untaggable."""
    values = r.get("values") or {}
    if r["type"] == "aws_autoscaling_group":
        blocks = values.get("tag") or []
        known = {t["key"]: t.get("value") for t in blocks if isinstance(t, dict) and "key" in t}
        return known, (None if unknown(au, "tag") else set())
    if not any(k in values or (isinstance(au, dict) and k in au) for k in ("tags", "tags_all")):
        return None
    if not unknown(au, "tags_all") and isinstance(values.get("tags_all"), dict):
        later = au.get("tags_all") if isinstance(au, dict) else None
        return dict(values["tags_all"]), {k for k, v in later.items() if v is True} if isinstance(
            later, dict
        ) else set()
    # tags_all unknown until apply: the provider's default tags under the resource's own, as far as known
    own: dict[str, Any] = values["tags"] if isinstance(values.get("tags"), dict) else {}
    if unknown(au, "tags"):
        return {**defaults, **own}, None
    later = au.get("tags") if isinstance(au, dict) else None
    return {**defaults, **own}, {k for k, v in later.items() if v is True} if isinstance(later, dict) else set()


def check_plan(plan: dict[str, Any], fleet: Fleet, prices: PriceTable, file: str | None) -> list[Violation]:
    policy = fleet.policy
    out: list[Violation] = []
    top = policy.overridden(None, None)

    def add(rule: str, where: str, actual: str, fix: str) -> None:
        out.append(Violation(rule, where, actual, fix, file))

    regions = provider_regions(plan)
    for key, region in regions.items():
        if top.regions is not None and region == UNKNOWN_REGION:
            add(
                "region-allowed",
                f"provider.{key}.region",
                "not in the plan (set from a local, an expression or the environment)",
                f"set the provider's region from a literal or a variable, one of: {', '.join(top.regions)}",
            )
        elif top.regions is not None and region not in top.regions:
            add("region-allowed", f"provider.{key}.region", region, f"use one of: {', '.join(top.regions)}")
    known = [r for r in regions.values() if r != UNKNOWN_REGION]
    region = regions.get("aws") or next(iter(known), "us-east-1")

    all_resources = resources(plan)
    after_unknown = {
        c["address"]: (c.get("change") or {}).get("after_unknown") for c in plan.get("resource_changes") or []
    }
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in all_resources:
        by_config.setdefault(_config_address(r["address"]), []).append(r)
    refs = _config_references(plan)
    defaults = _default_tags(plan)

    def template_of(r: dict[str, Any], block: dict[str, Any]) -> dict[str, Any] | None:
        for ref in sorted(refs.get(_config_address(r["address"]), ())):
            for t in by_config.get(ref, []):
                if t["type"] in TEMPLATES:
                    return t
        wanted = {v for v in (block.get("name"), block.get("id")) if isinstance(v, str) and v}
        for t in all_resources:  # named, not referred to: a template from another module, or made elsewhere
            tv = t.get("values") or {}
            if t["type"] in TEMPLATES and wanted & {tv.get("name"), tv.get("id")}:
                return t
        return None

    teams = {t.lower(): t for t in policy.teams}
    counted: dict[str, tuple[int, str | None, str]] = {}  # group -> (instances, team, where)
    team_usd: dict[str, float] = {}
    team_instances: dict[str, int] = {}
    unpriced: dict[str, list[str]] = {}

    def hourly(service: str, itype: str) -> float | None:
        try:
            return prices.hourly(service, region, itype)  # type: ignore[arg-type]
        except UnknownPrice:
            return None

    for r in all_resources:
        address, kind, values = r["address"], r["type"], r.get("values") or {}
        au = after_unknown.get(address)
        tagged = _tags(r, au, defaults)
        tags = tagged[0] if tagged else {}
        raw_team = tag_value(tags, "team")
        team = teams.get(raw_team, raw_team) if raw_team else None
        env = tag_value(tags, "environment")
        g = policy.overridden(team, env)
        if tagged is not None:
            later = set(g.required_tags or []) if tagged[1] is None else tagged[1]
            wrong = missing_tags(g.required_tags, tags, later)
            if wrong:
                add(
                    "required-tags",
                    f"{address}.tags",
                    wrong,
                    f"give {', '.join(g.required_tags or [])} a known value in the resource's tags or the "
                    "provider's default_tags",
                )

        found = machines(r, au, template_of)
        for m in found:
            if m.type is None:
                add(
                    "instance-type-allowed",
                    f"{m.where}.instance_type",
                    m.unknown_why,
                    "set the instance type from a literal or a variable in this plan, so policy can check it "
                    "before apply",
                )
            elif m.checked and not type_allowed(m.type, g):
                add("instance-type-allowed", f"{m.where}.instance_type", m.type, f"use one of: {allowed_types(g)}")
        counts_later = sorted({m.where for m in found if not m.count_known})
        if counts_later and (g.max_instances_per_deployment is not None or g.max_instances_per_team is not None):
            for where in counts_later:
                add(
                    "max-instances-per-deployment",
                    where,
                    "instance count unknown until apply",
                    "set the count (desired and maximum size) from a literal or a variable, so policy can check it",
                )
        _count(address, kind, found, team, counted, team_instances)
        if team is not None:
            _price(found, team, region, hourly, team_usd, unpriced)
        if kind == "aws_autoscaling_group" and g.gpu_schedule_required and outside_production(env, g):
            gpu = next((m.type for m in found if m.type and is_gpu(m.type, g)), None)
            config = _config_address(address)
            scheduled = any(
                config in refs.get(_config_address(a["address"]), ())
                for a in all_resources
                if a["type"] == "aws_autoscaling_schedule"
            )
            if gpu and not scheduled:
                add(
                    "gpu-schedule-required",
                    address,
                    f"{gpu} is a GPU instance ({family(gpu)}) in environment {env or '(none)'} "
                    "with no aws_autoscaling_schedule",
                    "add aws_autoscaling_schedule resources that scale it to 0 off hours, or tag it "
                    "environment: production",
                )

        if g.no_public_ssh is not False:
            for where, open_ in _ssh_rules(address, kind, values, au):
                add("no-public-ssh", where, open_, "allow port 22 from your own network only (or use SSM)")
        if g.store_encrypted is not False:
            _store(address, kind, values, add)

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
    for team in sorted({*team_usd, *unpriced}):
        g = policy.overridden(team, None)
        cap = g.max_monthly_cost_per_team
        if cap is None:
            continue
        usd = team_usd.get(team, 0.0)
        unknown_part = f"; no price for {', '.join(unpriced[team])}" if unpriced.get(team) else ""
        if usd > cap:
            add(
                "max-monthly-cost-per-team",
                f"tag team={team}",
                f"${usd:,.2f} a month always-on ({HOURS_PER_MONTH} h; prices as of {prices.as_of}, {region})"
                f"{unknown_part}",
                f"at most ${cap:,.2f}: smaller or fewer instances",
            )
        elif unknown_part:  # an unknown price is no $0: the cap cannot be shown to hold
            add(
                "max-monthly-cost-per-team",
                f"tag team={team}",
                f"no price for {', '.join(unpriced[team])} (prices as of {prices.as_of}): the cap of "
                f"${cap:,.2f} cannot be checked; the priced part is ${usd:,.2f} a month always-on",
                "use a priced instance type, or a price table that has it (modelfleet cost prices --refresh, "
                "then --prices FILE)",
            )
    return out


def _count(
    address: str,
    kind: str,
    found: list[Machine],
    team: str | None,
    counted: dict[str, tuple[int, str | None, str]],
    team_instances: dict[str, int],
) -> None:
    """Instances per deployment (a resource; EC2 instances by their count) and per team; a resource's
    alternative types (mixed-instances overrides) are one set of instances, not one each."""
    per_block: dict[str, int] = {}
    for m in found:
        key = m.where if kind == "aws_sagemaker_endpoint_configuration" else address
        per_block[key] = max(per_block.get(key, 0), m.count)
    for key, n in per_block.items():
        if n == 0:
            continue
        name = group(address) if kind in ("aws_instance", "aws_spot_instance_request") else key
        prev = counted.get(name, (0, team, name))
        counted[name] = (prev[0] + n, team, name)
        if team is not None:
            team_instances[team] = team_instances.get(team, 0) + n


def _price(found: list[Machine], team: str, region: str, hourly: Any, usd: dict, unpriced: dict) -> None:
    """Always-on dollars a month; the dearest of a resource's alternative types; unknown prices listed."""
    per_block: dict[str, tuple[int, float]] = {}
    for m in found:
        if m.count == 0 or m.type is None:
            continue
        price = hourly("sagemaker" if m.service == "sagemaker" else "ec2", m.type)
        if price is None:
            unpriced.setdefault(team, []).append(f"{m.type} in {region}")
            continue
        key = m.where if m.service == "sagemaker" else m.where.split(".mixed_instances_policy")[0]
        n, dearest = per_block.get(key, (m.count, 0.0))
        per_block[key] = (max(n, m.count), max(dearest, price))
    for n, price in per_block.values():
        usd[team] = usd.get(team, 0.0) + price * n * HOURS_PER_MONTH


def _store(address: str, kind: str, values: dict[str, Any], add: Any) -> None:
    if kind in STORES and not values.get("storage_encrypted"):
        add(
            "store-encrypted",
            f"{address}.storage_encrypted",
            str(values.get("storage_encrypted")),
            "set storage_encrypted = true",
        )
    if kind == "aws_elasticache_replication_group" and str(values.get("at_rest_encryption_enabled")).lower() != "true":
        add(
            "store-encrypted",
            f"{address}.at_rest_encryption_enabled",
            str(values.get("at_rest_encryption_enabled")),
            "set at_rest_encryption_enabled = true",
        )


def _open(cidrs: list[Any], cidrs_unknown: bool) -> str | None:
    if cidrs_unknown:
        return "port 22 open to CIDRs unknown until apply"
    public = ssh.public(cidrs)
    return f"port 22 open to {', '.join(public)}" if public else None


def _ssh_rules(address: str, kind: str, values: dict[str, Any], au: Any) -> Iterator[tuple[str, str]]:
    if kind in ("aws_security_group", "aws_default_security_group"):  # a VPC's default group takes ingress too
        rules = values.get("ingress") or []
        everything: list[Any] = []
        flagged = False
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict) or not opens_ssh(
                rule.get("from_port"), rule.get("to_port"), rule.get("protocol")
            ):
                continue
            cidrs = [*(rule.get("cidr_blocks") or []), *(rule.get("ipv6_cidr_blocks") or [])]
            everything += cidrs
            later = unknown(au, "ingress", i, "cidr_blocks") or unknown(au, "ingress", i, "ipv6_cidr_blocks")
            if found := _open(cidrs, later):
                flagged = True
                yield f"{address}.ingress[{i}]", found
        if not flagged and (found := _open(everything, False)):  # the world split across several rules
            yield f"{address}.ingress", found
    elif kind == "aws_security_group_rule" and values.get("type") == "ingress":
        if opens_ssh(values.get("from_port"), values.get("to_port"), values.get("protocol")):
            cidrs = [*(values.get("cidr_blocks") or []), *(values.get("ipv6_cidr_blocks") or [])]
            if found := _open(cidrs, unknown(au, "cidr_blocks") or unknown(au, "ipv6_cidr_blocks")):
                yield address, found
    elif kind == "aws_vpc_security_group_ingress_rule" and opens_ssh(
        values.get("from_port"), values.get("to_port"), values.get("ip_protocol")
    ):
        cidrs = [c for c in (values.get("cidr_ipv4"), values.get("cidr_ipv6")) if c]
        if found := _open(cidrs, unknown(au, "cidr_ipv4") or unknown(au, "cidr_ipv6")):
            yield address, found
