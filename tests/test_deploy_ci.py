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


def creds(job: dict) -> dict:
    return next(s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials"))


def test_plan_and_apply_assume_separate_roles(tmp_path):
    write_ci(tmp_path)  # no fleet file here: the repository secrets
    wf = yaml.safe_load((tmp_path / ".github/workflows/modelfleet.yml").read_text())
    plan, apply = wf["jobs"]["plan"], wf["jobs"]["apply"]
    assert creds(plan)["with"]["role-to-assume"] == "${{ secrets.AWS_PLAN_ROLE_ARN }}"
    assert creds(apply)["with"]["role-to-assume"] == "${{ secrets.AWS_APPLY_ROLE_ARN }}"
    assert apply["environment"] == "production" and "environment" not in plan

    # deploy.ci in the fleet file names the roles (a ${VAR} the pipeline does not need may be unset)
    (tmp_path / "fleet.yaml").write_text(
        "auth: {admin_key: '${UNSET_ADMIN_KEY_FOR_CI}'}\n"
        "deploy:\n  region: eu-central-1\n  ci:\n"
        "    plan_role_arn: arn:aws:iam::123456789012:role/fleet-plan\n"
        "    apply_role_arn: arn:aws:iam::123456789012:role/fleet-apply\n"
        "deployments: {a: {kind: openai, urls: ['http://127.0.0.1:9/v1']}}\nroutes: {chat: {deployments: [a]}}\n"
    )
    result = CliRunner().invoke(ci, ["-o", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    assert "plan arn:aws:iam::123456789012:role/fleet-plan" in result.output
    wf = yaml.safe_load((tmp_path / ".github/workflows/modelfleet.yml").read_text())
    assert creds(wf["jobs"]["plan"])["with"]["role-to-assume"] == "arn:aws:iam::123456789012:role/fleet-plan"
    assert creds(wf["jobs"]["apply"])["with"]["role-to-assume"] == "arn:aws:iam::123456789012:role/fleet-apply"


def test_one_role_for_plan_and_apply_is_refused(tmp_path):
    (tmp_path / "fleet.yaml").write_text(
        "deploy:\n  region: eu-central-1\n  ci:\n"
        "    plan_role_arn: arn:aws:iam::123456789012:role/admin\n"
        "    apply_role_arn: arn:aws:iam::123456789012:role/admin\n"
        "deployments: {a: {kind: openai, urls: ['http://127.0.0.1:9/v1']}}\nroutes: {chat: {deployments: [a]}}\n"
    )
    result = CliRunner().invoke(ci, ["-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "plan_role_arn and apply_role_arn are the same role" in result.output
    assert not (tmp_path / ".github").exists()
