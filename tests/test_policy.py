"""Policy: planted violations (at least one per rule) in fleet files and in real terraform plans.

The plans are made by real terraform from tests/fixtures/plans/*/main.tf (see tfplan.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli
from tfplan import FIXTURES, make_plan

from modelfleet.config import load_fleet
from modelfleet.cost import month_period
from modelfleet.policy import RULES, PolicyError, check, enforce

POLICY = Path(__file__).parent / "fixtures" / "policy"
DECEMBER = month_period("2026-12")


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    return {name: make_plan(FIXTURES / name, tmp_path_factory.mktemp(name)) for name in ("violations", "clean")}


def found(fleet_file: Path, plan: Path | None = None) -> set[tuple[str, str]]:
    fleet = load_fleet(fleet_file)
    doc = json.loads(plan.read_text()) if plan else None
    return {(v.rule, v.where) for v in check(fleet, doc, plan_file=str(plan) if plan else None, period=DECEMBER)}


FLEET_VIOLATIONS = {
    ("instance-type-allowed", "deployments.big.create.instance_type"),
    ("region-allowed", "deployments.big.region"),
    ("required-tags", "deployments.orphan.runs_on.tags"),
    ("max-instances-per-deployment", "deployments.many.urls"),
    ("max-instances-per-deployment", "deployments.vision-gpu.urls"),  # the dev environment's limit: 2
    ("max-instances-per-team", "teams.nlp"),
    ("max-monthly-cost-per-team", "teams.nlp"),
    ("max-monthly-cost-per-team", "teams.vision"),  # the team's own limit: $500
    ("gpu-schedule-required", "deployments.vision-gpu.schedule"),
    ("route-timeout-cap", "routes.slow"),  # a JMESPath rule from the fleet file
}

PLAN_VIOLATIONS = {
    ("region-allowed", "provider.aws.apac.region"),
    ("required-tags", "aws_sagemaker_model.llm.tags"),
    ("required-tags", "aws_sagemaker_endpoint_configuration.llm.tags"),
    ("required-tags", "aws_launch_template.gpu.tags"),
    ("required-tags", "aws_autoscaling_group.gpu.tags"),
    ("required-tags", "aws_security_group.ssh.tags"),
    ("required-tags", "aws_db_instance.store.tags"),
    ("required-tags", "aws_elasticache_replication_group.counters.tags"),
    ("instance-type-allowed", "aws_sagemaker_endpoint_configuration.llm.production_variants[0].instance_type"),
    ("instance-type-allowed", "aws_instance.vllm[0].instance_type"),
    ("instance-type-allowed", "aws_instance.vllm[1].instance_type"),
    ("instance-type-allowed", "aws_instance.vllm[2].instance_type"),
    ("max-instances-per-deployment", "aws_sagemaker_endpoint_configuration.llm.production_variants[0]"),
    ("max-instances-per-deployment", "aws_autoscaling_group.gpu"),
    ("max-instances-per-team", "tag team=search"),
    ("max-monthly-cost-per-team", "tag team=search"),
    ("gpu-schedule-required", "aws_autoscaling_group.gpu"),
    ("no-public-ssh", "aws_security_group.ssh.ingress[0]"),
    ("store-encrypted", "aws_db_instance.store.storage_encrypted"),
    ("store-encrypted", "aws_elasticache_replication_group.counters.at_rest_encryption_enabled"),
    ("db-deletion-protection", "aws_db_instance.store"),  # a JMESPath rule over the plan
}


def test_every_planted_fleet_violation_is_caught_and_named():
    assert found(POLICY / "fleet-violations.yaml") == FLEET_VIOLATIONS


def test_every_planted_plan_violation_is_caught_and_named(plans):
    assert found(POLICY / "plan-policy.yaml", plans["violations"]) == PLAN_VIOLATIONS


def test_the_corpus_covers_every_rule():
    rules = {r for r, _ in FLEET_VIOLATIONS | PLAN_VIOLATIONS}
    assert set(RULES) <= rules
    assert {"route-timeout-cap", "db-deletion-protection"} <= rules


def test_a_clean_fleet_and_a_clean_plan_pass(plans):
    assert found(POLICY / "fleet-clean.yaml") == set()
    assert found(POLICY / "plan-policy.yaml", plans["clean"]) == set()
    enforce(load_fleet(POLICY / "fleet-clean.yaml"))


def test_each_violation_says_the_actual_value_and_the_fix(plans):
    fleet = load_fleet(POLICY / "plan-policy.yaml")
    got = {(v.rule, v.where): v for v in check(fleet, json.loads(plans["violations"].read_text()),
                                               plan_file="plan.json", period=DECEMBER)}  # fmt: skip
    cost = got[("max-monthly-cost-per-team", "tag team=search")]
    # 6 x ml.p4d.24xlarge ($37.688/h) + 3 x g5.12xlarge ($5.672/h) in us-east-1, 730 h a month
    assert "$177,495.12" in cost.actual
    assert cost.file == "plan.json"
    ssh = got[("no-public-ssh", "aws_security_group.ssh.ingress[0]")]
    assert ssh.actual == "port 22 open to 0.0.0.0/0"
    assert "your own network" in ssh.fix
    assert got[("instance-type-allowed", "aws_instance.vllm[0].instance_type")].actual == "g5.12xlarge"


def test_enforce_refuses_a_fleet_that_fails_policy():
    with pytest.raises(PolicyError) as exc:
        enforce(load_fleet(POLICY / "fleet-violations.yaml"))
    assert "deployments.big.create.instance_type" in str(exc.value)
    assert len(exc.value.violations) >= 9


def test_the_cli_exit_code_and_formats_are_for_ci(plans, tmp_path):
    ok = cli("policy", "check", "-f", str(POLICY / "plan-policy.yaml"), "--plan", str(plans["clean"]))
    assert "policy: ok" in ok.stdout

    bad = cli("policy", "check", "-f", str(POLICY / "fleet-violations.yaml"), "--month", "2026-12", check=False)
    assert bad.returncode == 1
    assert "fleet-violations.yaml:27: deployments.big.region" in bad.stdout  # the file and line
    assert "rule:   region-allowed" in bad.stdout
    assert "fix:    use one of: us-east-1, eu-central-1" in bad.stdout

    as_json = cli("policy", "check", "-f", str(POLICY / "plan-policy.yaml"), "--plan", str(plans["violations"]),
                  "--format", "json", check=False)  # fmt: skip
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and len(doc["violations"]) == len(PLAN_VIOLATIONS)
    assert {"rule", "where", "actual", "fix", "file"} <= set(doc["violations"][0])

    sarif_path = tmp_path / "policy.sarif"
    done = cli("policy", "check", "-f", str(POLICY / "plan-policy.yaml"), "--plan", str(plans["violations"]),
               "--format", "sarif", "-o", str(sarif_path), check=False)  # fmt: skip
    assert done.returncode == 1
    sarif = json.loads(sarif_path.read_text())
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert len(run["results"]) == len(PLAN_VIOLATIONS)
    for result in run["results"]:
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == str(plans["violations"])
        assert result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]


def test_the_rules_are_listed():
    out = cli("policy", "rules", "-f", str(POLICY / "plan-policy.yaml")).stdout
    assert all(rule in out for rule in RULES)
    assert "db-deletion-protection" in out and "values.deletion_protection" in out


def test_a_file_that_is_not_a_plan_is_refused(tmp_path):
    junk = tmp_path / "plan.json"
    junk.write_text('{"hello": 1}')
    done = cli("policy", "check", "-f", str(POLICY / "plan-policy.yaml"), "--plan", str(junk), check=False)
    assert done.returncode == 2
    assert "terraform show -json" in done.stderr


def test_a_broken_jmespath_rule_is_a_config_error(tmp_path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text(
        "policy:\n  rules:\n    - {id: x, each: routes, require: 'timeout <=', fix: f}\n"
        "deployments: {a: {kind: openai, urls: ['http://127.0.0.1:9/v1']}}\nroutes: {chat: {deployments: [a]}}\n"
    )
    done = cli("policy", "check", "-f", str(bad), check=False)
    assert done.returncode == 2
    assert "policy.rules.0.require" in done.stderr and "JMESPath" in done.stderr
