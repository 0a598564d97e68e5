"""Chat templates from local files, for containers that take a prompt string (TGI, LMI).

The template comes from a file named in the deployment config: a Hugging Face `tokenizer_config.json`
(its `chat_template`, `bos_token`, `eos_token`) or a bare `.jinja` file. Nothing is downloaded. It is
rendered as `transformers` renders it: a sandboxed Jinja environment with trim_blocks/lstrip_blocks,
`raise_exception`, and `add_generation_prompt=True`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelfleet.errors import ConfigError


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", origin: str = "<template>") -> None:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ConfigError([f"the chat template does not parse: {exc}"], origin) from exc
        self.bos_token = bos_token
        self.eos_token = eos_token

    @classmethod
    def load(cls, path: str | Path) -> ChatTemplate:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read the chat template: {exc.strerror or exc}"], str(path)) from exc
        if path.suffix != ".json":
            return cls(text, origin=str(path))
        doc = json.loads(text)
        template = doc.get("chat_template")
        if isinstance(template, list):  # newer files list named templates
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if not template:
            raise ConfigError(["no `chat_template` in this tokenizer_config.json"], str(path))
        return cls(template, bos_token=_token(doc.get("bos_token")), eos_token=_token(doc.get("eos_token")),
                   origin=str(path))  # fmt: skip

    def render(self, messages: list[dict[str, Any]], **extra: Any) -> str:
        return self._template.render(
            messages=messages, bos_token=self.bos_token, eos_token=self.eos_token, add_generation_prompt=True, **extra
        )


def _token(value: Any) -> str:
    return value.get("content", "") if isinstance(value, dict) else (value or "")


def _raise(message: str) -> None:
    from jinja2 import TemplateError

    raise TemplateError(message)
