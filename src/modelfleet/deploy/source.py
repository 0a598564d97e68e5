"""Reading a fleet file to render it: validated as `modelfleet serve` would, without needing its secrets.

Rendering never needs a secret's value: ${ENV} references that are unset here are checked with a
placeholder, and the raw document (references kept) is what the gateway's copy is made from.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any

import yaml

from modelfleet.config.loader import parse_fleet
from modelfleet.config.schema import Fleet
from modelfleet.errors import ConfigError

PLACEHOLDER_SUFFIX = "-placeholder-for-rendering"  # what must never reach a rendered file
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def _included_texts(text: str, path: Path) -> list[str]:
    """The team files a platform fleet `include:`s (folders, globs, files), so their ${VARS} get placeholders
    too; which of them really merge in is for config/include.py to say."""
    try:
        files = ((yaml.safe_load(text) or {}).get("include") or {}).get("files") or []
    except (yaml.YAMLError, AttributeError):
        return []
    found: set[Path] = set()
    for entry in files if isinstance(files, list) else []:
        target = path.parent / str(entry)
        found.update([*target.glob("*.yaml"), *target.glob("*.yml")] if target.is_dir() else
                     (Path(p) for p in glob.glob(str(target))))  # fmt: skip
    return [f.read_text(encoding="utf-8", errors="replace") for f in sorted(found) if f.is_file()]


def _env_or_placeholders(text: str) -> dict[str, str]:
    """The environment, plus a placeholder (long enough for a key) for each unset ${VAR} without a default."""
    unset = {m.group(1) for m in _REF.finditer(text) if m.group(1) not in os.environ and m.group(2) is None}
    return {**os.environ, **{name: f"unset-{name.lower()}{PLACEHOLDER_SUFFIX}" for name in unset}}


def load(path: Path) -> tuple[Fleet, dict[str, Any], str]:
    """(the validated fleet, the raw document, the file's text)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the fleet file: {exc.strerror or exc}"], file=str(path)) from exc
    fleet = parse_fleet(text, file=str(path), env=_env_or_placeholders("\n".join([text, *_included_texts(text, path)])))
    if fleet.deploy is None:
        raise ConfigError(
            ["deploy: missing; add a `deploy:` section with at least `region:` (see `modelfleet deploy aws --help`)"],
            file=str(path),
        )
    return fleet, yaml.safe_load(text), text


def env_references(raw: Any) -> list[str]:
    """The ${VARS} a document refers to, sorted."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            found.update(m.group(1) for m in _REF.finditer(v))

    walk(raw)
    return sorted(found)
