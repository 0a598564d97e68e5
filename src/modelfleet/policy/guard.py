"""Checks that fleet and plan share: instance families, SSH exposure, allowed lists."""

from __future__ import annotations

from fnmatch import fnmatchcase

from modelfleet.config.policy import DEFAULT_GPU_FAMILIES, Guardrails

PRODUCTION = ["production", "prod"]


def family(instance_type: str) -> str:
    return instance_type.removeprefix("ml.").split(".")[0]


def is_gpu(instance_type: str, g: Guardrails) -> bool:
    return family(instance_type) in (g.gpu_families if g.gpu_families is not None else DEFAULT_GPU_FAMILIES)


def type_allowed(instance_type: str, g: Guardrails) -> bool:
    return g.instance_types is None or any(fnmatchcase(instance_type, p) for p in g.instance_types)


def outside_production(environment: str | None, g: Guardrails) -> bool:
    wanted = (environment or "").strip().lower()
    return wanted not in {e.strip().lower() for e in g.production_environments or PRODUCTION}


def allowed_types(g: Guardrails) -> str:
    return ", ".join(g.instance_types or [])


def opens_ssh(from_port: object, to_port: object, protocol: object) -> bool:
    if str(protocol) in ("-1", "all"):
        return True
    if str(protocol).lower() not in ("tcp", "6"):
        return False
    try:
        return int(str(from_port)) <= 22 <= int(str(to_port))
    except (TypeError, ValueError):
        return False
