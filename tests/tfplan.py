"""Real `terraform show -json` plans from the .tf fixtures, made offline with the local provider mirror.

`terraform init -plugin-dir` installs hashicorp/aws from the mirror (no registry); the fixtures'
providers carry test keys and the skip_* flags, so `terraform plan -refresh=false` makes no API call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import _binary, _missing

PLUGIN_DIR = os.environ.get("MODELFLEET_TF_PLUGIN_DIR", "/opt/tf-plugins")
FIXTURES = Path(__file__).parent / "fixtures" / "plans"


def terraform() -> str:
    exe = _binary("terraform", "/usr/local/bin")
    if exe is None or not Path(PLUGIN_DIR).is_dir():
        _missing(f"terraform and its provider mirror ({PLUGIN_DIR}) are needed to make real plans")
    return exe  # type: ignore[return-value]


def tf(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": "/dev/null"}
    done = subprocess.run([terraform(), *args], cwd=workdir, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"terraform {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done


def make_plan(source: Path, workdir: Path) -> Path:
    """Copy the .tf files to `workdir`, plan them, and return the path of the plan's JSON."""
    shutil.copytree(source, workdir, dirs_exist_ok=True)
    tf(workdir, "init", "-input=false", f"-plugin-dir={PLUGIN_DIR}")
    tf(workdir, "plan", "-input=false", "-refresh=false", "-out=plan.tfplan")
    out = workdir / "plan.json"
    out.write_text(tf(workdir, "show", "-json", "plan.tfplan").stdout)
    json.loads(out.read_text())
    return out
