"""`modelfleet deploy aws`: the rendered Terraform is fmt-clean, valid with the real terraform and the
offline provider mirror, identical on re-render, clean under checkov, and names SageMaker things as the
control plane does. Resources moto cannot create (ElastiCache, RDS' managed password wiring) are checked
in the plan JSON against a moto server (`terraform show -json`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import cli
from tf_harness import ROOT, Moto, checkov, init, plan_json, planned, point_at, render, tf

from modelfleet.config import parse_fleet
from modelfleet.config.sagemaker_names import names

FLEETS = {
    "sagemaker-office-hours": ROOT / "examples/sagemaker-office-hours/fleet.yaml",
    "always-on": ROOT / "examples/always-on/fleet.yaml",
    "schedules": ROOT / "tests/fleets/deploy-schedules.yaml",
    "gateway": ROOT / "tests/fleets/deploy-gateway.yaml",
    "everything": ROOT / "tests/fleets/deploy-everything.yaml",
    "fargate": ROOT / "tests/fleets/deploy-fargate.yaml",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("rendered")
    out = {}
    for name, fleet in FLEETS.items():
        render(fleet, base / name)
        out[name] = base / name
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".terraform" not in p.parts and p.name != ".terraform.lock.hcl"}  # fmt: skip


@pytest.mark.parametrize("name", list(FLEETS))
def test_rendered_module_is_fmt_clean_and_valid(rendered, name):
    folder = rendered[name]
    assert {"versions.tf", "providers.tf", "variables.tf", "outputs.tf", "README.md"} <= set(_files(folder))
    tf(folder, "fmt", "-check", "-recursive", "-diff")
    init(folder, backend=False)
    assert "Success" in tf(folder, "validate").stdout
    assert 'version = "5.100.0"' in (folder / "versions.tf").read_text()


def test_re_rendering_gives_the_same_bytes_and_changes_nothing(rendered, tmp_path):
    for name, fleet in FLEETS.items():
        render(fleet, tmp_path / name)
        assert _files(tmp_path / name) == _files(rendered[name]) | {}, name
        again = render(fleet, tmp_path / name)
        assert "(0 changed)" in again.stdout


def test_a_file_no_longer_rendered_is_removed(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    text = FLEETS["schedules"].read_text()
    fleet.write_text(text)
    render(fleet, tmp_path / "infra")
    assert (tmp_path / "infra/schedules.tf").exists()
    (tmp_path / "infra/terraform.tfstate").write_text("{}")  # terraform's own files are never touched
    fleet.write_text(
        text.replace(
            "  tags: {cost_center: cc-42}",
            "  gateway: ec2\n  certificate_arn: "
            "arn:aws:acm:us-east-1:123456789012:certificate/0b5c1d2e-3f4a-4b6c-8d9e-0f1a2b3c4d5e",
        )
    )
    render(fleet, tmp_path / "infra")
    assert not (tmp_path / "infra/schedules.tf").exists() and not (tmp_path / "infra/lambda").exists()
    assert (tmp_path / "infra/gateway.tf").exists() and (tmp_path / "infra/terraform.tfstate").exists()


def test_checkov_finds_nothing_and_every_skip_has_a_reason(rendered):
    for name, folder in rendered.items():
        done = subprocess.run([checkov(), "-d", str(folder), "--framework", "terraform", "--quiet", "--compact",
                               "-o", "json"], capture_output=True, text=True, timeout=600)  # fmt: skip
        report = json.loads(done.stdout)
        summary = report["summary"]
        failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
        assert summary["failed"] == 0 and not failed, f"{name}: {failed}"
        assert summary["passed"] > 40
        for tf_file in folder.glob("*.tf"):
            for skip in re.findall(r"checkov:skip=.*", tf_file.read_text()):
                assert re.match(r"checkov:skip=CKV2?_AWS_\d+:\S.{10,}", skip), f"{tf_file.name}: {skip}"


def test_sagemaker_names_match_the_control_plane(rendered):
    """The names in the HCL and the Lambda's events come from config/sagemaker_names.py, as the control
    plane's do. (test_schedule_lambda.py shows it end to end: the gateway creates the model and config
    under the names the rendered event carries.)"""
    env = {"QUANT_KEY": "k" * 32, "ADMIN_KEY": "a" * 32}
    fleet = parse_fleet(FLEETS["schedules"].read_text(), env=env)
    plain, gated = names(fleet.deployments["plain"]), names(fleet.deployments["gated"])
    hcl = (rendered["schedules"] / "sagemaker.tf").read_text()
    assert f'name = "{plain.model}"' in hcl.replace("  ", " ") or f'"{plain.model}"' in hcl
    assert re.fullmatch(r"plain-ep-[0-9a-f]{8}", plain.model) and plain.model == plain.config
    event = json.loads((rendered["schedules"] / "events/gated-start.json").read_text())
    assert (event["model"]["name"], event["config"]["name"]) == (gated.model, gated.config)
    assert event["hf_token_secret"] == "tsched/gated/hf-token" and "HF_TOKEN" not in json.dumps(event)
    # The gateways' copy of the fleet keeps every setting the names depend on.
    gw_text = (rendered["always-on"] / "gateway/fleet.yaml").read_text()
    gw = parse_fleet(gw_text, env={"QUANT_KEY": "k" * 32, "ADMIN_KEY": "a" * 32, "MODELFLEET_DB_PASSWORD": "p",
                                   "MODELFLEET_DB_HOST": "db", "MODELFLEET_REDIS_HOST": "redis"})  # fmt: skip
    src = parse_fleet(FLEETS["always-on"].read_text(), env={"QUANT_KEY": "k" * 32, "ADMIN_KEY": "a" * 32})
    assert names(gw.deployments["mistral"]) == names(src.deployments["mistral"])
    assert f'"{names(src.deployments["mistral"]).model}"' in (rendered["always-on"] / "sagemaker.tf").read_text()


def test_who_owns_each_endpoint(rendered):
    sched = (rendered["schedules"] / "sagemaker.tf").read_text()
    assert 'resource "aws_sagemaker_endpoint" "plain"' in sched  # nothing else manages it
    assert 'resource "aws_sagemaker_endpoint" "gated"' not in sched  # the schedule Lambda does
    assert 'resource "aws_sagemaker_model" "gated"' not in sched  # its HF token must not pass through the state
    assert "ignore_changes = [endpoint_config_name]" in sched
    schedules = (rendered["schedules"] / "schedules.tf").read_text()
    assert 'schedule_expression          = "cron(30 6 ? * 2-6 *)"' in schedules
    assert 'schedule_expression          = "cron(0 18 ? * MON-FRI *)"' in schedules
    assert schedules.count('schedule_expression_timezone = "Europe/Berlin"') == 2
    # With the gateway in AWS its control plane keeps schedules and endpoints: no Lambda, no endpoint.
    gw = rendered["gateway"]
    assert not (gw / "schedules.tf").exists() and 'aws_sagemaker_endpoint"' not in (gw / "sagemaker.tf").read_text()


def test_an_endpoint_with_a_gateway_elsewhere_that_wakes_or_idles_is_not_terraforms(tmp_path):
    from modelfleet.deploy.aws.ownership import endpoint_owner

    text = FLEETS["schedules"].read_text()
    fleet = parse_fleet(text, env={})
    assert [endpoint_owner(fleet.deployments[n], False) for n in ("plain", "gated", "manual")] == [
        "terraform",
        "lambda",
        "nobody",
    ]
    assert {endpoint_owner(fleet.deployments[n], True) for n in ("plain", "gated", "manual")} == {"control-plane"}
    waking = parse_fleet(
        text.replace("      tags: {owner: ml}\n", "      tags: {owner: ml}\n    wake_on_request: true\n"), env={}
    )
    assert endpoint_owner(waking.deployments["plain"], False) == "gateway-elsewhere"


def test_secrets_stay_out_of_the_rendered_files(rendered, tmp_path):
    for name, folder in rendered.items():
        for path, data in _files(folder).items():
            assert b"aws_secretsmanager_secret_version" not in data, (name, path)
            assert b"placeholder-for-rendering" not in data, (name, path)
    # A team key written into the fleet file would be copied into SSM: refused, naming the field, not the key.
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEETS["gateway"].read_text().replace('["${QUANT_KEY}"]', '["sk-literal-key-0123456789abcdef"]'))
    done = cli("deploy", "aws", "-f", str(fleet), "-o", str(tmp_path / "infra"), check=False)
    assert done.returncode == 2 and "teams.quant.keys: write each key as ${ENV_VAR}" in done.stderr
    assert "sk-literal" not in done.stderr + done.stdout


MISTAKES = [
    (("deploy:\n  name: tgw\n", "deploy_:\n  name: tgw\n"), "unknown field 'deploy_'"),
    (
        ("  region: us-east-1\n  gateway", "  region: eu-west-1\n  gateway"),
        "deployments.mistral.region: 'us-east-1' is not deploy.region 'eu-west-1'",
    ),
    (("  certificate_arn: ${TEST_CERTIFICATE_ARN", "  #"), "deploy.certificate_arn: the gateway's ALB serves HTTPS"),
    (('"0 7 * * MON-FRI"', '"0 7 1 * MON-FRI"'), "cannot combine a day of month and a day of week"),
    (
        ("container: messages", "container: tgi\n    chat_template: tokenizer_config.json"),
        "deployments.mistral.chat_template: a gateway on EC2 cannot read a file",
    ),
    (
        ("role_arn: arn:aws:iam::123456789012:role/tgw-sagemaker", "role_arn: tgw-sagemaker"),
        "create.role_arn: expected arn:aws:iam::ACCOUNT:role/NAME",
    ),
    (("name: tgw", "name: T"), "deploy.name (line"),
    (("deployments:\n", "deployments:\n  tiny: {kind: llama-cpp}\n"), "deployments.tiny: a llama-cpp engine does not"),
]


@pytest.mark.parametrize(("change", "expected"), MISTAKES)
def test_config_mistakes_name_the_field(tmp_path, change, expected):
    fleet = tmp_path / "fleet.yaml"
    text = FLEETS["gateway"].read_text()
    assert change[0] in text
    fleet.write_text(text.replace(change[0], change[1]))
    if "cron" in expected or "day of month" in expected:  # schedules become EventBridge crons without a gateway
        fleet.write_text(fleet.read_text().replace("  gateway: ec2\n", "  gateway: none\n"))
    done = cli("deploy", "aws", "-f", str(fleet), "-o", str(tmp_path / "infra"), check=False)
    assert done.returncode == 2, done.stdout
    assert expected in done.stderr and str(fleet) in done.stderr


def test_a_fleet_without_a_deploy_section_says_what_to_add(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments: {a: {kind: openai, urls: ['http://h:1/v1']}}\nroutes: {chat: {deployments: [a]}}\n")
    done = cli("deploy", "aws", "-f", str(fleet), "-o", str(tmp_path / "infra"), check=False)
    assert done.returncode == 2 and "deploy: missing; add a `deploy:` section" in done.stderr


def test_help_teaches_and_missing_terraform_is_a_clear_message(tmp_path, rendered):
    helped = cli("deploy", "--help").stdout
    for command in ("aws", "plan", "apply", "destroy", "check", "modelfleet deploy aws -f fleet.yaml -o infra/"):
        assert command in helped
    assert "certificate_arn" in cli("deploy", "aws", "--help").stdout
    env = {"PATH": str(tmp_path), "MODELFLEET_TERRAFORM": ""}
    done = cli("deploy", "check", "-C", str(rendered["schedules"]), env=env, check=False)
    assert done.returncode == 1 and "terraform is not installed" in done.stderr
    done = cli("deploy", "plan", "-C", str(tmp_path), check=False)
    assert done.returncode == 1 and "has no rendered module" in done.stderr


def test_deploy_check_runs_fmt_and_validate(rendered):
    env = {"MODELFLEET_TF_PLUGIN_DIR": os.environ.get("MODELFLEET_TF_PLUGIN_DIR", "/opt/tf-plugins")}
    done = cli("deploy", "check", "-C", str(rendered["sagemaker-office-hours"]), env=env)
    assert "terraform fmt -check" in done.stderr and "terraform validate" in done.stderr
    assert "The configuration is valid" in done.stderr


def test_shared_state_and_gateway_in_the_plan_json(rendered):
    """moto cannot create an ElastiCache replication group, so Redis, PostgreSQL and the gateway wiring of the
    always-on example are checked in its plan."""
    folder = rendered["always-on"]
    moto = Moto()
    try:
        point_at(folder, moto.url)
        init(folder)
        values = planned(plan_json(folder))
    finally:
        moto.stop()
    redis = values["aws_elasticache_replication_group.counters"]
    assert redis["engine"] == "redis" and redis["transit_encryption_enabled"] and redis["automatic_failover_enabled"]
    assert redis["num_cache_clusters"] == 2
    db = values["aws_db_instance.store"]
    assert db["engine"] == "postgres" and db["manage_master_user_password"] and db["storage_encrypted"]
    assert db["multi_az"] and "password" not in {k for k, v in db.items() if v}
    tg = values["aws_lb_target_group.gateway"]
    check = tg["health_check"][0]
    assert (check["path"], check["interval"], check["unhealthy_threshold"]) == ("/readyz", 10, 2)
    assert tg["port"] == 8000 and tg["deregistration_delay"] == "30"
    https, http = values["aws_lb_listener.https"], values["aws_lb_listener.http"]
    assert https["protocol"] == "HTTPS" and https["certificate_arn"].startswith("arn:aws:acm:")
    assert http["default_action"][0]["redirect"][0]["protocol"] == "HTTPS"
    asg = values["aws_autoscaling_group.gateway"]
    assert asg["min_size"] == 2 and asg["health_check_type"] == "ELB" and asg["instance_refresh"][0]["strategy"]
    # Session Manager instead of SSH, without AmazonSSMManagedInstanceCore (it reads every SSM parameter).
    assert not [a for a in values if a.startswith("aws_iam_role_policy_attachment.")]
    session = json.loads(values["aws_iam_role_policy.gateway_session_manager"]["policy"])["Statement"]
    assert [a.split(":")[0] for s in session for a in s["Action"]] == ["ssm"] + ["ssmmessages"] * 4
    assert "ssm:GetParameter" not in json.dumps(session)
    # default_tags stop at the group and the launch template: the instances and their volumes are tagged too.
    assert {"key": "managed-by", "value": "modelfleet", "propagate_at_launch": True} in asg["tag"]
    specs = values["aws_launch_template.gateway"]["tag_specifications"]
    assert {s["resource_type"] for s in specs} == {"instance", "volume"}
    assert all(s["tags"]["modelfleet:fleet"] == "always-on" for s in specs)
    assert len(values["aws_subnet.private[0]"]) and "aws_subnet.private[1]" in values  # two AZs
    for address, v in values.items():  # no SSH, and nothing but 80/443 from anywhere
        if address.startswith("aws_security_group_rule.") and v["type"] == "ingress":
            assert v["from_port"] != 22
            assert not v.get("cidr_blocks") or v["from_port"] in (80, 443), address
    alarms = {v["alarm_name"] for a, v in values.items() if a.startswith("aws_cloudwatch_metric_alarm.")}
    assert {"always-on-unhealthy-hosts", "always-on-gateway-5xx", "always-on-alb-5xx", "mistral-always-on-5xx",
            "mistral-always-on-latency-p95", "mistral-always-on-idle"} <= alarms  # fmt: skip
    fleet_yaml = yaml.safe_load((folder / "gateway/fleet.yaml").read_text())
    assert fleet_yaml["state"]["store"].startswith("postgresql://modelfleet:${MODELFLEET_DB_PASSWORD}@")
    assert fleet_yaml["state"]["counters"] == "rediss://${MODELFLEET_REDIS_HOST}:6379/0"
    assert "deploy" not in fleet_yaml and fleet_yaml["server"]["host"] == "0.0.0.0"
    user_data = (folder / "gateway/user-data.sh.tftpl").read_text()
    assert "modelfleet serve -f /etc/modelfleet/fleet.yaml" in user_data and "aws ssm get-parameter" in user_data


@pytest.mark.parametrize("shared", [False, True])
def test_user_data_renders_to_a_shell_script_that_parses(rendered, shared):
    """moto boots no instances: render the user data through terraform's own templatefile() and let bash parse it."""
    folder = rendered["always-on"]
    init(folder, backend=False)
    db = '"arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1"' if shared else '""'
    expr = ('templatefile("${path.module}/gateway/user-data.sh.tftpl", {region = "us-east-1", '
            'package = "modelfleet[sagemaker]==0.1.0", fleet_parameter = "/always-on/fleet.yaml", fleet_sha256 = "0f", '
            f'env_secret = "always-on/gateway-env", db_secret_arn = {db}, db_host = "db.internal", '
            'redis_host = "redis.internal"})')  # fmt: skip
    done = tf(folder, "console", input_text=expr + "\n")
    script = done.stdout.strip().removeprefix("<<EOT").removesuffix("EOT").strip() + "\n"
    assert script.startswith("#!/bin/bash\n") and "%{" not in script
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    assert "ExecStart=/opt/modelfleet/bin/modelfleet serve -f /etc/modelfleet/fleet.yaml" in script
    assert ("MODELFLEET_DB_HOST=db.internal" in script) is shared


def test_no_value_of_the_renderers_environment_reaches_the_rendered_files(tmp_path):
    """Every ${VAR} the fleets name is set to a marker while rendering: none appears in any file, nor in
    what the command prints (the files keep the references; the gateways resolve them)."""
    from modelfleet.deploy.source import env_references

    for name, fleet in FLEETS.items():
        refs = env_references(yaml.safe_load(fleet.read_text()))
        markers = {var: f"secret-marker-{i:02d}-0123456789abcdef" for i, var in enumerate(refs)}
        markers.pop("TEST_CERTIFICATE_ARN", None)  # not a secret: it has to be an ARN
        markers.pop("HF_TOKEN_REF", None)  # a reference: aws-secret://NAME
        markers.pop("FARGATE_COUNT", None)  # a number
        done = render(fleet, tmp_path / name, env=markers)
        for path, data in _files(tmp_path / name).items():
            assert not any(m.encode() in data for m in markers.values()), (name, path)
        assert not any(m in done.stdout + done.stderr for m in markers.values())
