"""Promptsets: JSONL prompts plus a manifest (ids, seed, token counts, checksums), reproducible to the byte.

A *pack* is a YAML file of templates and slot values for one category (four ship with modelfleet;
see `bench/packs/`). A *scenario* mixes packs by weight. The same scenario, count and seed give the
same `promptset.jsonl` and `manifest.json` bytes on any machine with the same tokenizer.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from modelfleet.errors import ConfigError

PROMPTSET_FILE = "promptset.jsonl"
MANIFEST_FILE = "manifest.json"
BUILTIN_PACKS = ("general-qa", "summarization", "code", "extraction")


@dataclass(frozen=True)
class Pack:
    category: str
    templates: list[str]
    slots: dict[str, Any]
    max_tokens: tuple[int, int]

    def draw(self, rng: random.Random) -> tuple[str, int]:
        template = rng.choice(self.templates)
        names = re.findall(r"{(\w+)}", template)
        values = {name: self._slot(name, rng) for name in names}
        return template.format(**values), rng.randint(*self.max_tokens)

    def _slot(self, name: str, rng: random.Random) -> str:
        spec = self.slots[name]
        if isinstance(spec, dict):  # a passage: some sentences, in order
            lo, hi = spec["count"]
            k = min(rng.randint(lo, hi), len(spec["sentences"]))
            picked = sorted(rng.sample(range(len(spec["sentences"])), k))
            return " ".join(spec["sentences"][i] for i in picked)
        return str(rng.choice(spec))


def load_pack(name_or_path: str) -> Pack:
    if name_or_path in BUILTIN_PACKS:
        text = (resources.files("modelfleet.bench") / "packs" / f"{name_or_path}.yaml").read_text()
        source = f"built-in pack {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError([f"no pack named {name_or_path!r}; built-in packs: {', '.join(BUILTIN_PACKS)}"])
        text, source = path.read_text(), str(path)
    doc = yaml.safe_load(text)
    try:
        lo, hi = doc.get("max_tokens", [64, 64])
        return Pack(doc["category"], list(doc["templates"]), dict(doc.get("slots", {})), (int(lo), int(hi)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError([f"a pack needs category, templates, slots and max_tokens [lo, hi]: {exc}"], source) from exc


class Tokenizer:
    """Counts tokens with the bundled GGUF's vocabulary when llama.cpp is installed, else a word regex."""

    WORDS = r"\w+|[^\w\s]"

    def __init__(self) -> None:
        self._llm: Any = None
        try:
            from llama_cpp import Llama
            from llama_cpp._utils import suppress_stdout_stderr

            from modelfleet.engine.model import bundled_model_path

            path = bundled_model_path()
            with suppress_stdout_stderr(disable=False):  # llama.cpp's C logging ignores verbose=False here
                self._llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
            self.name = f"llama.cpp:{path.name}"
            self.sha256 = _sha256_file(path)
        except Exception:  # no engine installed: still reproducible, just coarser
            self._llm = None
            self.name = "regex-words-v1"
            self.sha256 = hashlib.sha256(self.WORDS.encode()).hexdigest()

    def count(self, text: str) -> int:
        if self._llm is not None:
            return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        return len(re.findall(self.WORDS, text))


def generate_from_packs(mix: dict[str, float], count: int, seed: int) -> list[dict[str, Any]]:
    packs = {name: load_pack(name) for name in mix}
    names, weights = list(packs), [mix[n] for n in packs]
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        name = rng.choices(names, weights)[0]
        text, max_tokens = packs[name].draw(rng)
        rows.append(_row(i, packs[name].category, text, max_tokens))
    return rows


def generate_from_file(path: Path, count: int | None, seed: int) -> list[dict[str, Any]]:
    """Prompts from JSONL (`prompt` or `messages`, optional `category`, `max_tokens`) or CSV (`prompt` column)."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            source = list(csv.DictReader(f))
    else:
        source = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not source:
        raise ConfigError(["no prompts found"], str(path))
    for n, item in enumerate(source, 1):
        if "prompt" not in item and "messages" not in item:
            raise ConfigError([f"row {n}: expected a `prompt` or `messages` field"], str(path))
    rng = random.Random(seed)
    order = list(range(len(source)))
    rng.shuffle(order)
    count = count or len(source)
    rows = []
    for i in range(count):
        item = source[order[i % len(order)]]
        messages = item.get("messages") or [{"role": "user", "content": item["prompt"]}]
        rows.append(_row(i, item.get("category") or "custom", messages, int(item.get("max_tokens") or 128)))
    return rows


def _row(i: int, category: str, content: str | list, max_tokens: int) -> dict[str, Any]:
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    return {"id": f"p{i:05d}", "category": category, "messages": messages, "max_tokens": max_tokens}


def write(
    rows: list[dict[str, Any]], out: Path, *, scenario: str, seed: int, tokenizer: Tokenizer | None = None
) -> dict[str, Any]:
    tokenizer = tokenizer or Tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    data = body.encode("utf-8")
    (out / PROMPTSET_FILE).write_bytes(data)
    tokens = {r["id"]: sum(tokenizer.count(m.get("content") or "") for m in r["messages"]) for r in rows}
    digest = hashlib.sha256(data).hexdigest()
    manifest = {
        "scenario_id": scenario,
        "dataset_id": f"{scenario}-s{seed}-n{len(rows)}-{digest[:12]}",
        "seed": seed,
        "count": len(rows),
        "categories": {c: sum(1 for r in rows if r["category"] == c) for c in sorted({r["category"] for r in rows})},
        "tokenizer": {"name": tokenizer.name, "sha256": tokenizer.sha256},
        "prompt_tokens": {"total": sum(tokens.values()), "per_prompt": tokens},
        "files": {PROMPTSET_FILE: {"sha256": digest, "bytes": len(data)}},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify(directory: Path) -> list[str]:
    """Problems found (empty when the promptset matches its manifest)."""
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"cannot read {directory / MANIFEST_FILE}: {exc}"]
    problems = []
    for name, meta in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = _sha256_file(path)
        if actual != meta["sha256"]:
            problems.append(f"{name}: sha256 {actual} does not match the manifest's {meta['sha256']}")
    rows = (directory / PROMPTSET_FILE).read_text().splitlines() if (directory / PROMPTSET_FILE).is_file() else []
    if rows and len(rows) != manifest.get("count"):
        problems.append(f"{PROMPTSET_FILE}: {len(rows)} prompts, the manifest says {manifest.get('count')}")
    per_prompt = manifest.get("prompt_tokens", {}).get("per_prompt", {})
    if sum(per_prompt.values()) != manifest.get("prompt_tokens", {}).get("total"):
        problems.append("prompt_tokens: the per-prompt counts do not add up to the total")
    return problems


def load(directory_or_file: Path) -> list[dict[str, Any]]:
    path = directory_or_file / PROMPTSET_FILE if directory_or_file.is_dir() else directory_or_file
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
