"""Reading a fleet file to render it: validated as `modelfleet serve` would, without needing its secrets.

Rendering never needs a secret's value: ${ENV} references that are unset here are checked with a
placeholder, and the raw document (references kept) is what the gateway's copy is made from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from modelfleet.config.loader import parse_fleet
from modelfleet.config.schema import Fleet
from modelfleet.errors import ConfigError

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


class _EnvOrPlaceholder(Mapping[str, str]):
    """The environment, where every unset variable reads as a placeholder long enough for a key."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def __contains__(self, name: object) -> bool:
        return True

    def __getitem__(self, name: str) -> str:
        return self.env.get(name) or f"unset-{name.lower()}-placeholder-for-rendering"

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def load(path: Path) -> tuple[Fleet, dict[str, Any], str]:
    """(the validated fleet, the raw document, the file's text)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the fleet file: {exc.strerror or exc}"], file=str(path)) from exc
    fleet = parse_fleet(text, file=str(path), env=_EnvOrPlaceholder(os.environ))  # type: ignore[arg-type]
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
            found.update(_REF.findall(v))

    walk(raw)
    return sorted(found)
