"""Mandatory tags, checked on a resource's effective tags: a tag is there only if it has a value.

`environment: "  "` or `Environment: dev` (for a policy that asks for `environment`) is no tag: AWS
tags are case-sensitive, so cost reports grouped by `environment` would not see them. Tag *values*
that select guardrails (the environment, the team) are compared trimmed and case-insensitively, so
`environment: Dev` gets the dev environment's guardrails rather than none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def value(tags: Mapping[str, Any] | None, key: str) -> str | None:
    """A tag's value, trimmed and lower-cased; None when it is absent or blank."""
    got = (tags or {}).get(key)
    text = str(got).strip().lower() if got is not None else ""
    return text or None


def missing(required: list[str] | None, tags: Mapping[str, Any], unknown: set[str] | None = None) -> str | None:
    """What is wrong with the required tags, as a violation's `actual`; None when all are there.

    `unknown`: tags whose value Terraform knows only after apply (they cannot be checked)."""
    absent = [t for t in required or [] if t not in tags and t not in (unknown or set())]
    blank = [t for t in required or [] if t in tags and value(tags, t) is None]
    later = [t for t in required or [] if t not in tags and t in (unknown or set())]
    parts = []
    if absent:
        near = [k for k in tags if k.strip().lower() in {t.lower() for t in absent} and k not in absent]
        hint = f" (tags are case-sensitive: found {', '.join(near)})" if near else ""
        parts.append(f"missing {', '.join(absent)}{hint}")
    if blank:
        parts.append(f"blank {', '.join(blank)}")
    if later:
        parts.append(f"unknown until apply: {', '.join(later)}")
    return "; ".join(parts) or None
