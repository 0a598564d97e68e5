"""examples/multi-tenant: the README's walkthrough, run block by block as a person would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tfplan import PLUGIN_DIR, terraform

EXAMPLE = Path(__file__).parent.parent / "examples" / "multi-tenant"


def blocks(readme: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", readme, flags=re.S)


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path):
    tf = terraform()
    work = tmp_path / "multi-tenant"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(".terraform", "*.tfplan", "plan.json", "*.db"))
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "modelfleet").write_text(f'#!/bin/sh\nexec {sys.executable} -m modelfleet "$@"\n')
    (shim / "modelfleet").chmod(0o755)
    (shim / "terraform").symlink_to(tf)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": os.pathsep.join(sys.path),
           "TF_INIT_FLAGS": f"-plugin-dir={PLUGIN_DIR}", "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1",
           "COLUMNS": "160"}  # fmt: skip
    for var in ("SEARCH_KEY", "RESEARCH_KEY", "MODELFLEET_ADMIN_KEY", "MODELFLEET_HOME"):
        env.pop(var, None)  # the walkthrough exports them itself

    script = "\n".join(blocks((EXAMPLE / "README.md").read_text()))
    assert script.count("modelfleet ") == 10
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out

    # 1. merge: ownership and each team's routes; a rogue team file refused, with its file and line
    assert "ok: 3 deployment(s), 3 route(s), 2 team(s)" in out
    assert "deployments.search-llm                   teams.d/search.yaml (team search)" in out
    assert "team research may use: embed, research-chat, search-chat" in out
    assert "team search may use: embed, search-chat" in out
    assert "teams.d/rogue.yaml: server (line 2): a team file cannot change `server`" in out
    assert out.count("refused (exit 2)") == 2
    # a team file cannot read the platform's environment (the admin key) into a URL of its own
    assert "teams.d/thief.yaml: deployments.x.urls.0 (line 3): a team file reads only the environment" in out
    assert "(include.env: none); ${MODELFLEET_ADMIN_KEY} is not one of them" in out
    assert "admin-key-0123456789abcdef" not in out
    # 2. policy: the fleet passes, the plan fails with each planted violation named
    assert "policy: ok: fleet.yaml" in out
    assert "policy: 8 violation(s) in fleet.yaml and plan.json" in out
    for where in ("aws_sagemaker_endpoint_configuration.search_llm.production_variants[0].instance_type",
                  "aws_security_group.bastion.ingress[0]", "aws_db_instance.store.storage_encrypted",
                  "tag team=search"):  # fmt: skip
        assert where in out
    assert "$12,628.71 a month always-on" in out
    assert "policy failed (exit 1)" in out
    assert json.loads((work / "policy.sarif").read_text())["runs"][0]["results"]
    # 3. cost: December 2026, 23 weekdays x 12 h = 276 scheduled hours of 744
    doc = json.loads((work / "cost.json").read_text())
    search = next(d for d in doc["deployments"] if d["deployment"] == "search-llm")
    assert search["hours"]["scheduled"] == 276 and search["hours"]["always_on"] == 744
    research = next(d for d in doc["deployments"] if d["deployment"] == "research-vllm")
    assert research["hours"]["least"] == 23 * 0.5
    assert (work / "cost.png").read_bytes()[:4] == b"\x89PNG"
    assert "(idle)" in out
