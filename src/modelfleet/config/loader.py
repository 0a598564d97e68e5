"""Read a fleet file: YAML -> ${ENV} interpolation -> pydantic validation.

Every problem is reported as `FILE: a.b.c (line N): what is wrong; what is expected`,
so a person can go straight to the line.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from modelfleet.config.schema import MASK, REVEAL, Fleet
from modelfleet.errors import ConfigError

_URL_PASSWORD = re.compile(r"(//[^:/@\s]*:)[^@\s]*@")  # a password in a URL someone got wrong is not shown
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A fleet file is a few hundred nodes, a few levels deep, a few KB. Past these limits it is a mistake or an
# attack (a team file is not the platform's to write): anchors and aliases that expand to millions of nodes
# ("billion laughs") or nesting that overflows the parser's stack would hang or crash the gateway's start.
MAX_BYTES = 2_000_000
MAX_NODES = 200_000
MAX_DEPTH = 64
_MERGE = "tag:yaml.org,2002:merge"
Path_ = tuple[str | int, ...]


def load_fleet(path: str | Path, env: dict[str, str] | None = None) -> Fleet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the fleet file: {exc.strerror or exc}"], file=str(path)) from exc
    return parse_fleet(text, file=str(path), env=os.environ if env is None else env)


def parse_fleet(text: str, *, file: str = "<fleet>", env: dict[str, str] | os._Environ[str]) -> Fleet:
    data, lines = read_yaml(text, file=file)
    problems: list[str] = []
    data = interpolate(data, env, lines, problems)
    if problems:
        raise ConfigError(problems, file=file)
    if "include" in data:  # a platform fleet: team files merge in (config/include.py)
        from modelfleet.config.include import merge_includes

        return merge_includes(data, lines, file=file, env=env)
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(err, lines) for err in exc.errors()], file=file) from None


def read_yaml(
    text: str, *, file: str, expected: str = "a mapping with `deployments` and `routes`"
) -> tuple[dict[str, Any], dict[Path_, int]]:
    """A fleet (or team) file's mapping and the line of every path in it; a ConfigError naming the file."""
    if len(text) > MAX_BYTES:
        raise ConfigError([f"the file is {len(text):,} characters; a fleet file is a few KB (at most {MAX_BYTES:,})"],
                          file=file)  # fmt: skip
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_shape(root, file)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"], file=file) from None
    except RecursionError:
        raise ConfigError([f"nested too deeply to read; a fleet file is a few levels deep (at most {MAX_DEPTH})"],
                          file=file) from None  # fmt: skip
    if data is None:
        raise ConfigError([f"the file is empty; expected {expected}"], file=file)
    if not isinstance(data, dict):
        raise ConfigError([f"expected {expected} at the top level"], file=file)
    return data, _line_map(root)


def interpolate(
    data: dict[str, Any],
    env: Any,
    lines: dict[Path_, int],
    problems: list[str],
    may_read: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """${NAME} and ${NAME:-default} from `env`. `may_read(NAME)` returns why NAME is off limits (a team file)."""
    return _interpolate(data, (), env, lines, problems, may_read)


def _check_shape(root: yaml.Node | None, file: str) -> None:
    """Refuse duplicate keys (YAML keeps the last silently, so a reviewer reads one value and the gateway
    uses another), nesting past MAX_DEPTH, and aliases that expand past MAX_NODES: before anything walks it."""
    sizes: dict[int, int] = {}  # an alias is the same node object: each is sized once

    def size(node: yaml.Node, depth: int) -> int:
        line = node.start_mark.line + 1
        if depth > MAX_DEPTH:
            raise ConfigError([f"line {line}: nested deeper than {MAX_DEPTH} levels; a fleet file is a few "
                               "levels deep"], file=file)  # fmt: skip
        if id(node) in sizes:
            return sizes[id(node)]
        n = 1
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                    if key.value in keys:
                        raise ConfigError([f"line {key.start_mark.line + 1}: duplicate key {key.value!r} (first on "
                                           f"line {keys[key.value]}); YAML would keep only the last one"],
                                          file=file)  # fmt: skip
                    keys[key.value] = key.start_mark.line + 1
                n += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            n += sum(size(value, depth + 1) for value in node.value)
        sizes[id(node)] = n
        if n > MAX_NODES:
            raise ConfigError([f"line {line}: anchors and aliases here expand to over {MAX_NODES:,} values; a fleet "
                               "file is a few hundred"], file=file)  # fmt: skip
        return n

    if root is not None:
        size(root, 0)


def _line_map(node: yaml.Node | None, path: Path_ = ()) -> dict[Path_, int]:
    """YAML path -> 1-based line of the value (keys point at their own line)."""
    lines: dict[Path_, int] = {}
    if node is None:
        return lines
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines.update(_line_map(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            lines.update(_line_map(value, (*path, i)))
    return lines


def _interpolate(
    value: Any,
    path: Path_,
    env: Any,
    lines: dict[Path_, int],
    problems: list[str],
    may_read: Callable[[str], str | None] | None = None,
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), env, lines, problems, may_read) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, lines, problems, may_read) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        refused = may_read(name) if may_read is not None else None
        if refused is not None:  # checked before the value is looked at: a refused name is never read
            problems.append(f"{_where(path, lines)}: {refused}")
            return ""
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{_where(path, lines)}: environment variable {name} is not set; "
            f"export it, or write ${{{name}:-default}} to give a default"
        )
        return ""

    return _ENV.sub(substitute, value)


def _where(loc: Path_, lines: dict[Path_, int]) -> str:
    """Map a pydantic loc onto the YAML path, skipping union tags that are not in the file."""
    path: Path_ = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
    dotted = ".".join(str(p) for p in path) or "(top level)"
    line = lines.get(path)
    return f"{dotted} (line {line})" if line else dotted


def _describe(err: Any, lines: dict[Path_, int]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        field = str(loc[-1])
        names = _all_field_names()
        if field in names:  # a real field, in the wrong place: suggesting its own name would not help
            return f"{_where(loc, lines)}: unknown field {field!r}; it is a field of another section, not of this one"
        hint = difflib.get_close_matches(field, names, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"{_where(loc, lines)}: unknown field {field!r}{suggestion}"
    if kind == "union_tag_invalid":
        ctx = err["ctx"]
        field = ctx["discriminator"].strip("'")
        return (
            f"{_where((*loc, field), lines)}: {ctx['tag']!r} is not a known {field}; "
            f"expected one of {ctx['expected_tags']}"
        )
    if kind == "missing":
        return f"{_where(loc[:-1], lines)}: missing required field {loc[-1]!r}"
    if kind == "value_error":
        msg = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        if re.match(r"^[\w.-]+: ", msg):  # model-level errors carry their own path
            return msg
        return f"{_where(loc, lines)}: {msg}"
    got = err.get("input")
    secret = any(part in secret_fields() for part in loc)  # a mistake there is named, its value never shown
    shown = "" if isinstance(got, dict | list) or secret else "; got " + _URL_PASSWORD.sub(r"\1***@", repr(got))
    return f"{_where(loc, lines)}: {err['msg'].lower()}{shown}"


def _all_field_names() -> list[str]:
    return sorted({name for model in _models() for name in model.model_fields})


@functools.cache
def secret_fields() -> frozenset[str]:
    """The names of the schema's fields marked `Secret` (pydantic SecretStr), found once from the schema."""
    return frozenset(
        name
        for model in _models()
        for name, field in model.model_fields.items()
        if _types_in(field.annotation, SecretStr)
    )


@functools.cache
def _models() -> tuple[type[BaseModel], ...]:
    stack: list[type[BaseModel]] = [Fleet]
    seen: dict[type[BaseModel], None] = {}
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen[model] = None
        for field in model.model_fields.values():
            stack.extend(_types_in(field.annotation, BaseModel))
    return tuple(seen)


def _types_in(annotation: Any, base: type) -> list[type]:
    found: list[type] = []
    if isinstance(annotation, type) and issubclass(annotation, base):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_types_in(arg, base))
    if getattr(annotation, "__metadata__", None) is not None:
        found.extend(_types_in(annotation.__origin__, base))
    return found


def secret_values(fleet: Fleet) -> set[str]:
    """Every secret's value in `fleet`: where the masked dump shows the mask, the revealed one has it."""
    found: set[str] = set()

    def walk(masked: Any, shown: Any) -> None:
        if isinstance(masked, dict):
            for key, value in masked.items():
                walk(value, shown[key])
        elif isinstance(masked, list):
            for a, b in zip(masked, shown, strict=True):
                walk(a, b)
        elif masked == MASK and isinstance(shown, str) and shown != MASK:
            found.add(shown)

    walk(fleet.model_dump(mode="json"), fleet.model_dump(mode="json", context=REVEAL))
    return found
