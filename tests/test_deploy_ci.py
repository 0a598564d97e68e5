"""`modelfleet deploy ci`: the workflow and the Makefile it writes, and the Makefile run for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tfplan import FIXTURES, PLUGIN_DIR, terraform

from modelfleet.cli.deploy_ci import ci

POLICY = Path(__file__).parent / "fixtures" / "policy" / "plan-policy.yaml"


def write_ci(root: Path, *args: str) -> None:
    result = CliRunner().invoke(ci, ["-o", str(root), *args])
    assert result.exit_code == 0, result.output


def test_the_workflow_plans_and_checks_pull_requests_and_applies_merges(tmp_path):
    write_ci(tmp_path, "-f", "fleets/prod.yaml", "--terraform-dir", "infra", "--branch", "release")
    wf = yaml.safe_load((tmp_path / ".github/workflows/modelfleet.yml").read_text())
    triggers = wf[True]  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in triggers and triggers["push"] == {"branches": ["release"]}
    plan, apply = wf["jobs"]["plan"], wf["jobs"]["apply"]
    assert plan["if"] == "github.event_name == 'pull_request'" and apply["if"] == "github.event_name == 'push'"
    runs = [s.get("run") for s in plan["steps"] if s.get("run")]
    assert runs[-1] == "make policy"
    uses = [s.get("uses", "") for s in plan["steps"]]
    assert any(u.startswith("github/codeql-action/upload-sarif") for u in uses)
    comment = next(s for s in plan["steps"] if s.get("uses", "").startswith("actions/github-script"))
    assert "plan.txt" in comment["with"]["script"] and "createComment" in comment["with"]["script"]
    assert [s.get("run") for s in apply["steps"] if s.get("run")][-1] == "make apply"
    make = (tmp_path / "Makefile").read_text()
    assert "FLEET ?= fleets/prod.yaml" in make and "TF_DIR ?= infra" in make


def test_it_does_not_overwrite_without_force(tmp_path):
    write_ci(tmp_path)
    again = CliRunner().invoke(ci, ["-o", str(tmp_path)])
    assert again.exit_code != 0 and "--force" in again.output
    write_ci(tmp_path, "--force")


def test_a_value_that_would_break_the_yaml_is_refused(tmp_path):
    bad = CliRunner().invoke(ci, ["-o", str(tmp_path), "--branch", "main\n  evil: 1"])
    assert bad.exit_code == 2 and "expected a plain name" in bad.output


def make(root: Path, *targets: str) -> subprocess.CompletedProcess:
    terraform()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TF_CLI_CONFIG_FILE": "/dev/null",
           "CHECKPOINT_DISABLE": "1"}  # fmt: skip
    return subprocess.run(
        ["make", *targets, f"TF_INIT_FLAGS=-plugin-dir={PLUGIN_DIR}", f"MODELFLEET={sys.executable} -m modelfleet",
         f"TF={shutil.which('terraform') or '/usr/local/bin/terraform'}"],
        cwd=root, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_the_makefile_runs_fmt_validate_plan_policy_for_real(tmp_path):
    write_ci(tmp_path)
    shutil.copy(POLICY, tmp_path / "fleet.yaml")
    shutil.copytree(FIXTURES / "clean", tmp_path / "deploy" / "aws")
    done = make(tmp_path, "policy")
    assert done.returncode == 0, done.stdout + done.stderr
    order = [line for line in done.stdout.splitlines() if " fmt " in line or " validate" in line
             or " plan " in line or "policy check" in line]  # fmt: skip
    assert [o.split()[1] for o in order[:3]] == ["-chdir=deploy/aws"] * 3
    assert "policy: ok" in (tmp_path / "policy.txt").read_text()
    assert "aws_sagemaker_endpoint_configuration.llm will be created" in (tmp_path / "plan.txt").read_text()

    # The same repository with the planted violations: policy fails the build, and says why.
    shutil.rmtree(tmp_path / "deploy" / "aws")
    shutil.copytree(FIXTURES / "violations", tmp_path / "deploy" / "aws")
    failed = make(tmp_path, "policy")
    assert failed.returncode != 0
    report = (tmp_path / "policy.txt").read_text()
    assert "aws_security_group.ssh.ingress[0]" in report and "no-public-ssh" in report
    assert '"ruleId": "store-encrypted"' in (tmp_path / "policy.sarif").read_text()
    dry = make(tmp_path, "-n", "apply")
    steps = [line for line in dry.stdout.splitlines() if "terraform" in line or "modelfleet" in line]
    assert "apply" in steps[-1] and "policy check" in steps[-2]
