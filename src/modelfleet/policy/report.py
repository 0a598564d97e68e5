"""Violations as text (people), JSON (scripts) or SARIF 2.1.0 (code review tools: GitHub code scanning)."""

from __future__ import annotations

from typing import Any

import orjson

from modelfleet import __version__
from modelfleet.config.policy import Rule
from modelfleet.policy.violation import RULES, Violation


def text(violations: list[Violation], checked: str) -> str:
    if not violations:
        return f"policy: ok: {checked}"
    lines = [f"policy: {len(violations)} violation(s) in {checked}"]
    for v in violations:
        where = f"{v.file}{f':{v.line}' if v.line else ''}: " if v.file else ""
        lines.append(f"  {where}{v.where}\n    rule:   {v.rule}\n    actual: {v.actual}\n    fix:    {v.fix}")
    return "\n".join(lines)


def json(violations: list[Violation], checked: str) -> str:
    doc = {"ok": not violations, "checked": checked, "violations": [v.as_dict() for v in violations]}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


def sarif(violations: list[Violation], rules: list[Rule], fallback_file: str) -> str:
    descriptions = {**RULES, **{r.id: r.description or r.fix for r in rules}}
    used = sorted({v.rule for v in violations} | set(RULES))
    results: list[dict[str, Any]] = []
    for v in violations:
        location: dict[str, Any] = {
            "physicalLocation": {"artifactLocation": {"uri": v.file or fallback_file}},
            "logicalLocations": [{"fullyQualifiedName": v.where}],
        }
        if v.line:
            location["physicalLocation"]["region"] = {"startLine": v.line}
        results.append(
            {
                "ruleId": v.rule,
                "ruleIndex": used.index(v.rule),
                "level": "error",
                "message": {"text": f"{v.where}: {v.actual}; fix: {v.fix}"},
                "locations": [location],
            }
        )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "modelfleet policy",
                        "version": __version__,
                        "rules": [{"id": r, "shortDescription": {"text": descriptions.get(r, r)}} for r in used],
                    }
                },
                "results": results,
            }
        ],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
