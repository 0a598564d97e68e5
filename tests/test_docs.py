"""The README's fleet file is a real one: it passes `config check` as printed."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_fleet_file_passes_config_check(tmp_path):
    text = README.read_text()
    example = re.search(r"## The fleet file.*?```yaml\n(.*?)```", text, re.S)
    assert example, "the README lost its fleet file example"
    (tmp_path / "fleet.yaml").write_text(example.group(1))
    (tmp_path / "my-model.gguf").write_bytes(b"")  # named by the example; config check does not load it
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    env = {"PGPASSWORD": "pw", "MODELFLEET_ADMIN_KEY": "a" * 32, "MODELFLEET_METRICS_KEY": "m" * 32,
           "QUANT_KEY": "q" * 32, "VLLM_API_KEY": "v"}  # fmt: skip
    out = cli("config", "check", "-f", str(tmp_path / "fleet.yaml"), env=env)
    assert "ok:" in out.stdout
