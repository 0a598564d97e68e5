"""Policy dodges: what an attacker tried to slip past the guardrails, in fleet files and in real plans.

The plan is made by real terraform from tests/fixtures/plans/dodges/ (a child module included).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli
from tfplan import FIXTURES, make_plan

from modelfleet.config import load_fleet
from modelfleet.cost import estimate, load_prices, month_period
from modelfleet.policy import check

POLICY = Path(__file__).parent / "fixtures" / "policy"
DECEMBER = month_period("2026-12")


@pytest.fixture(scope="module")
def dodges(tmp_path_factory) -> Path:
    return make_plan(FIXTURES / "dodges", tmp_path_factory.mktemp("dodges"))


def test_every_dodge_in_a_real_plan_is_caught(dodges):
    fleet = load_fleet(POLICY / "plan-policy.yaml")
    got = {(v.rule, v.where): v.actual for v in check(fleet, json.loads(dodges.read_text()), period=DECEMBER)}
    assert got == {
        ("required-tags", "aws_instance.blank.tags"): "blank environment",
        ("required-tags", "aws_instance.cased.tags"):
            "missing environment (tags are case-sensitive: found Environment)",
        ("required-tags", "aws_instance.computed.tags"): "unknown until apply: environment",
        ("instance-type-allowed", "aws_instance.computed.instance_type"): "unknown until apply",
        # resources in a child module: the group finds its template there, and counts and needs a schedule
        ("instance-type-allowed", "module.gpu.aws_launch_template.gpu.instance_type"): "p4d.24xlarge",
        ("max-instances-per-deployment", "module.gpu.aws_autoscaling_group.gpu"): "6 instances",
        ("gpu-schedule-required", "module.gpu.aws_autoscaling_group.gpu"):
            "p4d.24xlarge is a GPU instance (p4d) in environment dev with no aws_autoscaling_schedule",
        # other resources that launch instances
        ("instance-type-allowed", "aws_launch_configuration.old.instance_type"): "g5.48xlarge",
        ("instance-type-allowed", "aws_spot_instance_request.spot.instance_type"): "p4d.24xlarge",
        ("instance-type-allowed", "aws_autoscaling_group.mixed.mixed_instances_policy.override[0].instance_type"):
            "p4d.24xlarge",
        ("no-public-ssh", "aws_security_group.split.ingress[0]"): "port 22 open to 0.0.0.0/1, 128.0.0.0/1",
        # 1+1+1 instances, 1 spot, 2 in the mixed group, 6 in the module's group, 1 unpriced
        ("max-instances-per-team", "tag team=search"): "13 instances in this plan",
        ("max-monthly-cost-per-team", "tag team=search"): (
            "$215,463.15 a month always-on (730 h; prices as of 2026-11-23, us-east-1); "
            "no price for c7i.48xlarge in us-east-1"
        ),
    }  # fmt: skip


def test_an_unpriced_instance_type_fails_a_cost_cap_it_would_otherwise_pass(tmp_path):
    plan = {
        "planned_values": {"root_module": {"resources": [{
            "address": "aws_instance.big", "type": "aws_instance", "mode": "managed",
            "values": {"instance_type": "c7i.48xlarge", "tags_all": {"team": "t", "cost-center": "c",
                                                                     "environment": "production"}},
        }]}},
    }  # fmt: skip
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "policy: {max_monthly_cost_per_team: 100000}\n"
        "deployments: {a: {kind: openai, urls: ['http://127.0.0.1:9/v1']}}\nroutes: {chat: {deployments: [a]}}\n"
    )
    [v] = check(load_fleet(fleet_file), plan, period=DECEMBER)
    assert v.rule == "max-monthly-cost-per-team"
    assert v.actual.startswith("no price for c7i.48xlarge in us-east-1")
    assert "cannot be checked; the priced part is $0.00" in v.actual


FLEET = """\
policy:
  required_tags: [team, cost-center, environment]
  gpu_schedule_required: true
  max_monthly_cost_per_team: 100000
  environments: {{dev: {{instance_types: [g6.xlarge]}}}}
teams:
  research: {{tags: {{team: research, cost-center: cc-9, environment: dev}}}}
deployments:
  gpu:
    kind: openai
    urls: ["http://127.0.0.1:9/v1"]
    runs_on: {{instance_type: {itype}, region: eu-central-1, tags: {tags}}}
routes:
  chat: {{deployments: [gpu]}}
"""


@pytest.mark.parametrize(
    ("tags", "itype", "expected"),
    [
        # the team's tags say dev: a deployment cannot tag itself production to dodge the GPU schedule
        ("{team: research, environment: production}", "g6.xlarge", {"gpu-schedule-required"}),
        # `Research` is team research (whose tags say dev), and `Dev` is the dev environment: its types apply
        ("{team: Research, cost-center: x, environment: ' Dev '}", "g5.xlarge", {"instance-type-allowed"}),
        # no team: a blank value is no tag; `Environment` is not `environment`
        ("{team: ' ', cost-center: cc-1, Environment: production}", "c7i.large", {"required-tags"}),
    ],
    ids=["deployment-overrides-team", "case-and-spaces", "blank-and-cased"],
)
def test_fleet_tags_are_checked_on_their_effective_values(tmp_path, tags, itype, expected):
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(tags=tags, itype=itype))
    got = check(load_fleet(path), period=DECEMBER)
    assert {v.rule for v in got} >= expected, got


def test_fleet_tag_values_are_checked_not_just_their_keys(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(tags="{team: ' ', cost-center: '', Environment: production}", itype="c7i.large"))
    [v] = [v for v in check(load_fleet(path), period=DECEMBER) if v.rule == "required-tags"]
    assert v.actual == "missing environment (tags are case-sensitive: found Environment); blank team, cost-center"
    path.write_text(FLEET.format(tags="{team: research, cost-center: cc-9, environment: ' Dev '}", itype="g5.xlarge"))
    rules = {(v.rule, v.actual) for v in check(load_fleet(path), period=DECEMBER)}
    assert ("instance-type-allowed", "g5.xlarge") in rules  # the dev environment's list, for `Dev`


def test_an_unpriced_deployment_is_a_warning_in_the_estimate_and_fails_a_cost_cap(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(tags="{team: research}", itype="c7i.48xlarge"))
    fleet = load_fleet(path)
    cost = estimate(fleet, *DECEMBER, load_prices())
    assert cost.as_dict()["unpriced"] == ["gpu"]
    assert cost.warnings == [
        "gpu: no ec2 price for c7i.48xlarge in eu-central-1 in the shipped price table; refresh: modelfleet cost "
        "prices --refresh; its cost is unknown and left out of the totals"
    ]
    [v] = [v for v in check(fleet, period=DECEMBER) if v.rule == "max-monthly-cost-per-team"]
    assert v.where == "teams.research" and v.actual.startswith("no price for gpu (c7i.48xlarge in eu-central-1)")
    done = cli("cost", "-f", str(path), "--month", "2026-12", "--json")
    assert "warning: unpriced: gpu: no ec2 price for c7i.48xlarge" in done.stderr
    assert json.loads(done.stdout)["warnings"] == cost.warnings
    table = cli("cost", "-f", str(path), "--month", "2026-12")
    assert "unpriced" in table.stdout and "warning: unpriced: gpu" in table.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not JSON"),
        ('{"planned_values": []}', "planned_values: input should be a valid dictionary"),
        ('{"planned_values": {"root_module": {"resources": [{"type": "aws_instance"}]}}}',
         "planned_values.root_module.resources.0.address: field required"),
        ('{"planned_values": {"root_module": {"resources": [{"address": "a.b", "type": "aws_instance", '
         '"values": {"instance_type": 5, "tags_all": "x"}}]}}, "resource_changes": [{"address": "a.b", '
         '"change": {"after_unknown": {"tags_all": 1}}}]}', None),
        ('{"planned_values": {}, "configuration": {"provider_config": {"aws": 3}}}',
         "configuration.provider_config.aws: input should be a valid dictionary"),
    ],
    ids=["not-json", "planned-values-list", "no-address", "odd-values", "odd-provider"],
)  # fmt: skip
def test_a_malformed_plan_exits_2_naming_the_file(tmp_path, text, expected):
    plan = tmp_path / "plan.json"
    plan.write_text(text)
    done = cli("policy", "check", "-f", str(POLICY / "plan-policy.yaml"), "--plan", str(plan), check=False)
    assert "Traceback" not in done.stderr, done.stderr
    if expected is None:  # odd values Terraform never writes: read as far as they go, no crash
        assert done.returncode in (0, 1), done.stderr
        return
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"error: {plan}: " in done.stderr and expected in done.stderr, done.stderr


def test_an_instance_count_known_only_after_apply_cannot_pass_an_instance_cap():
    tags = {"team": "search", "cost-center": "cc-7", "environment": "production"}
    plan = {
        "planned_values": {"root_module": {"resources": [
            {"address": "aws_launch_template.t", "type": "aws_launch_template",
             "values": {"name": "t", "instance_type": "m7i.large", "tags_all": tags}},
            {"address": "aws_autoscaling_group.g", "type": "aws_autoscaling_group",
             "values": {"min_size": 0, "launch_template": [{"name": "t"}],
                        "tag": [{"key": k, "value": v} for k, v in tags.items()]}},
        ]}},
        "resource_changes": [{"address": "aws_autoscaling_group.g",
                              "change": {"after_unknown": {"desired_capacity": True, "max_size": True}}}],
        "configuration": {"provider_config": {"aws": {"name": "aws",  # a region the plan shows
                                                      "expressions": {"region": {"constant_value": "us-east-1"}}}}},
    }  # fmt: skip
    got = {(v.rule, v.where, v.actual) for v in check(load_fleet(POLICY / "plan-policy.yaml"), plan, period=DECEMBER)}
    assert got == {("max-instances-per-deployment", "aws_autoscaling_group.g", "instance count unknown until apply")}
