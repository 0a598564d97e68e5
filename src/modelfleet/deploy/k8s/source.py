"""The fleet file as the renderer reads it: its text (shipped as is, in a ConfigMap), the fleet it describes,
and the ${ENV_VAR}s it names (each one a key of a Secret, so no value is ever rendered).

Rendering needs no secret: a ${VAR} that is not set (and has no default) is validated with a placeholder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelfleet.config import Fleet, KubernetesDeployment, parse_fleet
from modelfleet.config.kubernetes import workload_name
from modelfleet.config.loader import secret_fields
from modelfleet.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Source:
    path: Path
    text: str
    raw: dict[str, Any]
    fleet: Fleet
    env: dict[str, bool] = field(default_factory=dict)  # ${VAR} named in the file -> has a default

    @property
    def kubernetes(self) -> dict[str, KubernetesDeployment]:
        return {n: d for n, d in self.fleet.deployments.items() if isinstance(d, KubernetesDeployment)}

    def state_var(self, what: str) -> str | None:
        """The ${VAR} that state.store or state.counters is taken from, if it is one."""
        value = (self.raw.get("state") or {}).get(what)
        m = _ENV.fullmatch(value.strip()) if isinstance(value, str) else None
        return m.group(1) if m else None


def read(path: Path) -> Source:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the fleet file: {exc.strerror or exc}"], file=str(path)) from exc
    env: dict[str, bool] = {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # parse_fleet below says where, and what is wrong
    for value in _strings(data):  # values only: a ${VAR} in a comment is not read
        for m in _ENV.finditer(value):
            env[m.group(1)] = env.get(m.group(1), False) or m.group(2) is not None
    values = {name: os.environ[name] for name in env if name in os.environ}
    values |= {
        name: f"unset-for-rendering-{name}"
        for name, has_default in env.items()
        if name not in values and not has_default
    }
    fleet = parse_fleet(text, file=str(path), env=values)  # validates first: its messages name the line
    raw = data
    problems = _literal_secrets(raw) + _interpolated_manifest_fields(raw) + _same_workload(fleet)
    if problems:
        raise ConfigError(problems, file=str(path))
    return Source(path, text, raw, fleet, dict(sorted(env.items())))


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _same_workload(fleet: Fleet) -> list[str]:
    """Two deployments whose Kubernetes names coincide (Qwen_7B and qwen-7b) would overwrite each other."""
    seen: dict[tuple[str, str], str] = {}
    found = []
    for name, dep in fleet.deployments.items():
        if isinstance(dep, KubernetesDeployment):
            key = (dep.namespace, workload_name(name))
            if key in seen:
                found.append(f"deployments.{name}: its Kubernetes name {key[1]!r} in namespace {key[0]!r} is also "
                             f"deployments.{seen[key]}'s; rename one, or give it another namespace")  # fmt: skip
            seen[key] = name
    return found


def _literal_secrets(node: Any, path: str = "") -> list[str]:
    """A secret written into the file would be rendered into the ConfigMap: it must be a ${VAR} (or aws-secret://)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in secret_fields() and value is not None:
                for i, v in enumerate(value if isinstance(value, list) else [value]):
                    literal = not (isinstance(v, str) and (_ENV.fullmatch(v.strip()) or v.startswith("aws-secret://")))
                    if literal:
                        at = f"{where}[{i}]" if isinstance(value, list) else where
                        found.append(
                            f"{at}: `deploy k8s` ships the fleet file in a ConfigMap, so a secret here must "
                            "be a ${ENV_VAR} reference (its value goes in the Secret modelfleet-env)"
                        )
            else:
                found.extend(_literal_secrets(value, where))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(_literal_secrets(v, f"{path}[{i}]"))
    elif isinstance(node, str) and _URL_PASSWORD.search(node) and not _ENV.search(node.split("@", 1)[0]):
        found.append(f"{path}: a password written into a URL would be rendered into the ConfigMap; "
                     "write it as ${ENV_VAR} (e.g. postgresql://app:${PGPASSWORD}@db/modelfleet)")  # fmt: skip
    return found


_URL_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def _interpolated_manifest_fields(raw: dict[str, Any]) -> list[str]:
    """A kubernetes deployment's fields are rendered into manifests: a ${VAR} there would put its value in a file."""
    found = []
    for name, dep in (raw.get("deployments") or {}).items():
        if not isinstance(dep, dict) or dep.get("kind") != "kubernetes":
            continue
        for key, value in dep.items():
            if "${" in yaml.safe_dump(value):
                found.append(
                    f"deployments.{name}.{key}: `deploy k8s` renders this field into a manifest, so it "
                    "cannot take a ${ENV_VAR}; write it out (a token goes in a Secret: hf_token_secret)"
                )
    return found
