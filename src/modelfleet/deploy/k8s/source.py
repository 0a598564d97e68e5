"""The fleet file as the renderer reads it: its text (shipped as is, in a ConfigMap), the fleet it describes,
and the ${ENV_VAR}s it names (each one a key of a Secret, so no value is ever rendered).

Rendering needs no secret: a ${VAR} that is not set (and has no default) is validated with a placeholder
that fits where it stands: a URL where a URL is expected (state.store, state.counters, urls, *_url), plain
text elsewhere. The placeholder only lets the file validate here; nothing rendered carries it (the gateway
reads the real value from the Secret at run time).
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
    # Team files the fleet `include:`s: path relative to the fleet file -> text. They ship beside it, in the
    # same ConfigMap, so the gateway in the pod reads the same fleet.
    included: dict[str, str] = field(default_factory=dict)

    @property
    def kubernetes(self) -> dict[str, KubernetesDeployment]:
        return {n: d for n, d in self.fleet.deployments.items() if isinstance(d, KubernetesDeployment)}

    def state_var(self, what: str) -> str | None:
        """The ${VAR} that state.store or state.counters is taken from, if it is one."""
        return self.var("state", what)

    def var(self, section: str, what: str) -> str | None:
        """The ${VAR} that `section.what` is taken from, if it is one."""
        value = (self.raw.get(section) or {}).get(what)
        m = _ENV.fullmatch(value.strip()) if isinstance(value, str) else None
        return m.group(1) if m else None


def read(path: Path) -> Source:
    text = _text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None  # parse_fleet below says where, and what is wrong
    included = _included(path, data)
    docs = {str(path): data, **{str(path.parent / rel): yaml.safe_load(t) for rel, t in included.items()}}
    env: dict[str, bool] = {}
    for doc in docs.values():
        for value in _strings(doc):  # values only: a ${VAR} in a comment is not read
            for m in _ENV.finditer(value):
                env[m.group(1)] = env.get(m.group(1), False) or m.group(2) is not None
    values = {name: os.environ[name] for name in env if name in os.environ}
    kinds: dict[str, str] = {}
    for doc in docs.values():
        for var, kind in _placeholder_kinds(doc).items():
            kinds.setdefault(var, kind)
    values |= {
        name: placeholder(name, kinds.get(name))
        for name, has_default in env.items()
        if name not in values and not has_default
    }
    fleet = parse_fleet(text, file=str(path), env=values)  # validates first: its messages name the line
    for where, doc in docs.items():
        problems = _literal_secrets(doc) + _interpolated_manifest_fields(doc if isinstance(doc, dict) else {})
        if problems:
            raise ConfigError(problems, file=where)
    problems = _same_workload(fleet)
    if problems:
        raise ConfigError(problems, file=str(path))
    return Source(path, text, data, fleet, dict(sorted(env.items())), included)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the fleet file: {exc.strerror or exc}"], file=str(path)) from exc


def _included(path: Path, data: Any) -> dict[str, str]:
    """The team files of `include:`, by path relative to the fleet file (they must sit under its folder)."""
    if not isinstance(data, dict) or "include" not in data:
        return {}
    from modelfleet.config.include import included_files

    try:
        files = included_files(data, str(path))
    except Exception:
        return {}  # a malformed include: parse_fleet says what is wrong with it
    out = {}
    for f in files:
        rel = os.path.relpath(f, path.parent)
        if rel.startswith(".."):
            raise ConfigError([f"include: {f} is outside {path.parent}/; `deploy k8s` ships the included files "
                               "beside the fleet file in its ConfigMap, so they must sit in its folder or below"],
                              file=str(path))  # fmt: skip
        out[rel.replace(os.sep, "/")] = _text(Path(f))
    return dict(sorted(out.items()))


def placeholder(var: str, key: str | None) -> str:
    """A value for an unset ${VAR} that passes the validation of the field it fills (`key`, if it is all of it)."""
    host = re.sub(r"[^a-z0-9-]", "-", var.lower())
    if key == "store":
        return f"postgresql://unset-for-rendering@{host}.invalid/modelfleet"
    if key == "counters":
        return f"redis://{host}.invalid:6379/0"
    if key is not None and "url" in key.lower():
        return f"http://{host}.invalid/v1"
    return f"unset-for-rendering-{var}"


def _placeholder_kinds(node: Any, key: str | None = None) -> dict[str, str]:
    """${VAR} -> the key of the first value that is exactly that reference (a list's items take its key)."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            for var, kind in _placeholder_kinds(v, str(k)).items():
                found.setdefault(var, kind)
    elif isinstance(node, list):
        for v in node:
            for var, kind in _placeholder_kinds(v, key).items():
                found.setdefault(var, kind)
    elif isinstance(node, str) and key is not None and (m := _ENV.fullmatch(node.strip())):
        found[m.group(1)] = key
    return found


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
