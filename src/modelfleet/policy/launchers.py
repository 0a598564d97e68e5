"""What in a plan launches instances, of which type, and how many.

Instances come from SageMaker endpoint configurations and notebook instances, EC2 instances and spot requests, launch
templates and launch configurations (through the Auto Scaling groups that use them, and the
groups' mixed-instances overrides), EKS node groups, EC2 fleets and spot fleets. An instance type
Terraform knows only after apply is reported as unknown (`type` None): policy cannot pass it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

Service = str  # sagemaker | ec2


@dataclass(frozen=True, slots=True)
class Machine:
    where: str  # resource address, and the block in it
    type: str | None  # None: unknown until apply
    count: int  # instances it runs (0: a template; its group counts them)
    service: Service
    checked: bool = True  # False: the type is checked where it is declared (a template a group uses)
    count_known: bool = True  # False: how many is known only after apply
    unknown_why: str = "unknown until apply"  # why `type` is None


def unknown(after_unknown: Any, *path: str | int) -> bool:
    """Is the value at `path` unknown until apply (`after_unknown` of the plan's resource_changes)?"""
    node = after_unknown
    for part in path:
        if node is True:
            return True
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return node is True


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _first(value: Any) -> dict[str, Any]:
    items = _list(value)
    return items[0] if items and isinstance(items[0], dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _typed(where: str, values: dict, au: Any, path: tuple, count: int, service: Service, checked: bool = True):
    """A machine from `values[path]...instance_type`: known, unknown until apply, or not set (None)."""
    node: Any = values
    for part in path:
        node = node.get(part) if isinstance(node, dict) else node[part] if isinstance(node, list) else None
    itype = node.get("instance_type") if isinstance(node, dict) else None
    if isinstance(itype, str) and itype:
        return Machine(where, itype, count, service, checked)
    if unknown(au, *path, "instance_type"):
        return Machine(where, None, count, service, checked)
    return None


def machines(r: dict[str, Any], au: Any, template_of: Any) -> list[Machine]:
    """`template_of(r, block)`: the launch template or launch configuration resource a block refers to."""
    address, kind, values = r["address"], r["type"], r.get("values") or {}
    out: list[Machine | None] = []
    if kind == "aws_sagemaker_endpoint_configuration":
        for block in ("production_variants", "shadow_production_variants"):
            for i, v in enumerate(_list(values.get(block))):
                n = _int(v.get("initial_instance_count") if isinstance(v, dict) else 0) or 1
                out.append(_typed(f"{address}.{block}[{i}]", values, au, (block, i), n, "sagemaker"))
    elif kind in ("aws_instance", "aws_spot_instance_request"):
        m = _typed(address, values, au, (), 1, "ec2")
        template = template_of(r, _first(values.get("launch_template")))
        if (m is None or m.type is None) and template is not None:  # the type comes from its template
            itype = (template.get("values") or {}).get("instance_type")
            m = Machine(address, itype, 1, "ec2", checked=False) if itype else m
        out.append(m)
    elif kind == "aws_sagemaker_notebook_instance":  # a notebook runs on an ml. instance as well (GPU ones too)
        out.append(_typed(address, values, au, (), 1, "sagemaker"))
    elif kind in ("aws_launch_template", "aws_launch_configuration"):
        out.append(_typed(address, values, au, (), 0, "ec2"))
    elif kind == "aws_eks_node_group":
        n = _int(_first(values.get("scaling_config")).get("max_size"))
        out += [Machine(address, t, n, "ec2") for t in _list(values.get("instance_types")) if isinstance(t, str)]
        if unknown(au, "instance_types"):
            out.append(Machine(address, None, n, "ec2"))
    elif kind == "aws_autoscaling_group":
        n = max(_int(values.get("desired_capacity")), _int(values.get("max_size")))
        mixed = _first(values.get("mixed_instances_policy"))
        spec = _first(mixed.get("launch_template"))
        overrides = [
            _typed(
                f"{address}.mixed_instances_policy.override[{i}]",
                values,
                au,
                ("mixed_instances_policy", 0, "launch_template", 0, "override", i),
                n,
                "ec2",
            )
            for i in range(len(_list(spec.get("override"))))
        ]
        overrides = [o for o in overrides if o is not None]
        if overrides:  # the group runs these types, whatever its template says
            out += overrides
        else:
            ref = _first(spec.get("launch_template_specification")) or _first(values.get("launch_template"))
            template = template_of(r, ref) or template_of(r, {"name": values.get("launch_configuration")})
            itype = (template or {}).get("values", {}).get("instance_type") if template else None
            if itype:
                out.append(Machine(address, itype, n, "ec2", checked=False))
            elif template is None:  # a template made elsewhere (by id, a data source): its type is not in the plan
                out.append(Machine(address, None, n, "ec2", unknown_why="its launch template is not in this plan"))
    elif kind == "aws_ec2_fleet":
        n = _int(_first(values.get("target_capacity_specification")).get("total_target_capacity"))
        for i, cfg in enumerate(_list(values.get("launch_template_config"))):
            for j, _ in enumerate(_list(cfg.get("override") if isinstance(cfg, dict) else None)):
                path = ("launch_template_config", i, "override", j)
                out.append(_typed(f"{address}.launch_template_config[{i}].override[{j}]", values, au, path, n, "ec2"))
    elif kind == "aws_spot_fleet_request":
        n = _int(values.get("target_capacity"))
        for i, _ in enumerate(_list(values.get("launch_specification"))):
            out.append(
                _typed(f"{address}.launch_specification[{i}]", values, au, ("launch_specification", i), n, "ec2")
            )
        for i, cfg in enumerate(_list(values.get("launch_template_config"))):
            for j, _ in enumerate(_list(cfg.get("overrides") if isinstance(cfg, dict) else None)):
                path = ("launch_template_config", i, "overrides", j)
                where = f"{address}.launch_template_config[{i}].overrides[{j}]"
                out.append(_typed(where, values, au, path, n, "ec2"))
    counts: dict[str, list[tuple[Any, ...]]] = {
        "aws_autoscaling_group": [("desired_capacity",), ("max_size",)],
        "aws_eks_node_group": [("scaling_config", 0, "max_size")],
        "aws_ec2_fleet": [("target_capacity_specification", 0, "total_target_capacity")],
        "aws_spot_fleet_request": [("target_capacity",)],
    }
    later = counts.get(kind, [])
    if any(unknown(au, *path) for path in later):
        return [dataclasses.replace(m, count_known=False) for m in out if m is not None]
    return [
        dataclasses.replace(m, count_known=False)
        if kind == "aws_sagemaker_endpoint_configuration" and _variant_count_unknown(m, au)
        else m
        for m in out
        if m is not None
    ]


def _variant_count_unknown(m: Machine, au: Any) -> bool:
    found = re.search(r"\.(\w+)\[(\d+)\]$", m.where)
    return found is not None and unknown(au, found.group(1), int(found.group(2)), "initial_instance_count")


def group(address: str) -> str:
    return re.sub(r"\[[^\]]*\]$", "", address)  # aws_instance.vllm[2] -> aws_instance.vllm
