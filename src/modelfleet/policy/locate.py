"""Put a line on each fleet violation: the line of its path in the file that declares it (for SARIF, people)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from modelfleet.policy.violation import Violation


def _lines(path: str) -> dict[str, int]:
    from modelfleet.config.loader import _line_map

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return {}
    return {".".join(str(p) for p in k): line for k, line in _line_map(root).items()}


def locate(violations: list[Violation], fleet_file: str | None, plan_file: str | None) -> list[Violation]:
    """Fleet violations get their file (the fleet file unless a team file owns them) and line."""
    cache: dict[str, dict[str, int]] = {}
    out = []
    for v in violations:
        file = v.file
        if file is None or (plan_file is not None and file == plan_file):
            if file is None and fleet_file is not None:
                file = fleet_file
            else:
                out.append(v)
                continue
        lines = cache.setdefault(file, _lines(file))
        where = v.where
        while where and where not in lines:
            where = where.rpartition(".")[0]
        out.append(dataclasses.replace(v, file=file, line=lines.get(where)))
    return out
