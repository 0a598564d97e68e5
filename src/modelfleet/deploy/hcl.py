"""A small HCL writer: Python values in, `terraform fmt`-clean text out.

    Block("resource", "aws_iam_role", "sagemaker", body=[
        Attr("name", "llama-sagemaker"),
        Attr("assume_role_policy", Call("jsonencode", {"Version": "2012-10-17", ...})),
        Block("lifecycle", body=[Attr("ignore_changes", [Ref("tags")])]),
    ])

Values: str (quoted, `${` escaped), Template (quoted, `${...}` kept), Ref (an expression as is), bool,
int, None, list, dict, Call (a function of values). Alignment follows `terraform fmt`: the `=` of consecutive one-line
attributes line up; a multi-line value, a comment or a block ends the run. Output depends only on the
input (dicts keep their order), so re-rendering gives the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
INDENT = "  "


class Ref(str):
    """An HCL expression written as is: `aws_iam_role.sagemaker.arn`, `var.region`."""


class Template(str):
    """A quoted string whose `${...}` interpolations are kept: "arn:aws:logs:${var.region}:..."."""


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]

    def __init__(self, name: str, *args: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class Attr:
    key: str
    value: Any


@dataclass(frozen=True)
class Comment:
    text: str


@dataclass
class Block:
    type: str
    labels: tuple[str, ...] = ()
    body: list[Item] = field(default_factory=list)

    def __init__(self, type: str, *labels: str, body: list[Item] | None = None) -> None:
        self.type = type
        self.labels = labels
        self.body = list(body or [])


BLANK = Comment("")
Item = Attr | Block | Comment


def render(items: list[Item]) -> str:
    """A file: top-level blocks separated by one blank line."""
    out: list[str] = []
    for i, item in enumerate(items):
        if i and isinstance(item, Block):
            out.append("")
        out.extend(_item_lines(item, 0) if not isinstance(item, Attr) else _body_lines([item], 0))
    return "\n".join(out) + "\n"


def string(s: str) -> str:
    escaped = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"' + escaped.replace("${", "$${").replace("%{", "%%{") + '"'


def _item_lines(item: Item, depth: int) -> list[str]:
    pad = INDENT * depth
    if isinstance(item, Comment):
        return [f"{pad}# {item.text}" if item.text else ""]
    assert isinstance(item, Block)
    head = " ".join([item.type, *(string(label) for label in item.labels)])
    if not item.body:
        return [f"{pad}{head} {{}}"]
    return [f"{pad}{head} {{", *_body_lines(item.body, depth + 1), f"{pad}}}"]


def _body_lines(body: list[Item], depth: int) -> list[str]:
    pad = INDENT * depth
    lines: list[str] = []
    run: list[tuple[str, str]] = []  # one-line attributes whose `=` line up

    def flush() -> None:
        width = max((len(k) for k, _ in run), default=0)
        lines.extend(f"{pad}{k.ljust(width)} = {v}" for k, v in run)
        run.clear()

    for item in body:
        if isinstance(item, Attr):
            key = item.key if _IDENT.match(item.key) else string(item.key)
            value = _value(item.value, depth)
            if "\n" in value:
                flush()
                lines.append(f"{pad}{key} = {value}")
            else:
                run.append((key, value))
            continue
        flush()
        if isinstance(item, Block) and lines and lines[-1] != "" and not lines[-1].lstrip().startswith("#"):
            lines.append("")  # a nested block stands apart from the attributes above it
        lines.extend(_item_lines(item, depth))
    flush()
    return lines


def _value(v: Any, depth: int) -> str:
    if isinstance(v, Ref):
        return str(v)
    if isinstance(v, Template):
        return '"' + v.replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, Call):
        return f"{v.name}({', '.join(_value(a, depth) for a in v.args)})"
    if isinstance(v, list | tuple):
        return _list(list(v), depth)
    if isinstance(v, dict):
        return _object(v, depth)
    raise TypeError(f"cannot write {type(v).__name__} as HCL")


def _list(items: list[Any], depth: int) -> str:
    if not items:
        return "[]"
    flat = [_value(i, depth) for i in items]
    one_line = "[" + ", ".join(flat) + "]"
    if all(not isinstance(i, dict | list | tuple) for i in items) and len(one_line) <= 80:
        return one_line
    pad = INDENT * (depth + 1)
    inner = [f"{pad}{_value(i, depth + 1)}," for i in items]
    return "[\n" + "\n".join(inner) + "\n" + INDENT * depth + "]"


def _object(obj: dict[str, Any], depth: int) -> str:
    if not obj:
        return "{}"
    lines = _body_lines([Attr(str(k), v) for k, v in obj.items()], depth + 1)
    return "{\n" + "\n".join(lines) + "\n" + INDENT * depth + "}"
