"""Read a `terraform show -json` plan: the parts policy reads are checked first, so a malformed
file gets an answer that names it and the path inside it, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from modelfleet.errors import ModelfleetError


class PlanError(ModelfleetError):
    pass


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Resource(_Part):
    address: str
    type: str
    mode: str = "managed"
    name: str | None = None
    values: dict[str, Any] | None = None


class _Module(_Part):
    resources: list[_Resource] = []
    child_modules: list[_Module] = []


class _Planned(_Part):
    root_module: _Module = _Module()


class _Change(_Part):
    after_unknown: dict[str, Any] | bool | None = None


class _ResourceChange(_Part):
    address: str
    change: _Change = _Change()


class _ConfigModule(_Part):
    resources: list[dict[str, Any]] = []
    module_calls: dict[str, dict[str, Any]] = {}


class _Configuration(_Part):
    provider_config: dict[str, dict[str, Any]] = {}
    root_module: _ConfigModule = _ConfigModule()


class _Plan(_Part):
    planned_values: _Planned
    configuration: _Configuration = _Configuration()
    variables: dict[str, dict[str, Any]] = {}
    resource_changes: list[_ResourceChange] = []


def read_plan(path: Path) -> dict[str, Any]:
    expected = "expected `terraform show -json PLANFILE` output"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PlanError(f"{path}: not JSON ({exc}); {expected}") from None
    if not isinstance(doc, dict) or "planned_values" not in doc:
        raise PlanError(f"{path}: no planned_values; {expected}")
    try:
        _Plan.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PlanError(f"{path}: {where}: {err['msg'].lower()}{more}; {expected}") from None
    return doc
