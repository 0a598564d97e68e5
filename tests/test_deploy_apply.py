"""`terraform apply` and `destroy` of rendered modules against a moto server: afterwards boto3 sees what the
fleet implies, a second plan changes nothing, and destroy leaves none of it.

Both test fleets are applied in one run, as two modules of one root (each pointed at moto by its own
override file). moto cannot create an ElastiCache replication group, so the gateway fleet here has one
gateway (no Redis, no PostgreSQL): those are checked in plan JSON (test_deploy_aws.py)."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError
from tf_harness import ROOT, Moto, init, plan_json, point_at, render, tf

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # ~150 s on 2 idle cores


@pytest.fixture(scope="module")
def moto_aws():
    server = Moto()
    yield server
    server.stop()


def _gone(call, *args, **kw) -> bool:
    try:
        call(*args, **kw)
    except ClientError:
        return True
    return False


def test_apply_then_destroy_against_moto(moto_aws, tmp_path):
    moto = moto_aws
    cert = moto.client("acm").request_certificate(DomainName="llm.example.com")["CertificateArn"]
    modules = {"schedules": "deploy-schedules.yaml", "gateway": "deploy-gateway.yaml", "fargate": "deploy-fargate.yaml"}
    for name, fleet in modules.items():
        render(ROOT / "tests/fleets" / fleet, tmp_path / name, env={"TEST_CERTIFICATE_ARN": cert, "FARGATE_COUNT": "1"})
        point_at(tmp_path / name, moto.url)
    (tmp_path / "main.tf").write_text("\n".join(f'module "{n}" {{\n  source = "./{n}"\n}}\n' for n in modules))
    init(tmp_path)
    started = time.monotonic()
    tf(tmp_path, "apply", "-auto-approve", "-input=false", timeout=900)
    applied = time.monotonic() - started

    sm, iam, secrets = moto.client("sagemaker"), moto.client("iam"), moto.client("secretsmanager")
    # SageMaker: Terraform's endpoint is up; the gated ones wait for the Lambda (their token is not in the state).
    assert sm.describe_endpoint(EndpointName="plain-ep")["EndpointStatus"] == "InService"
    models = {m["ModelName"] for m in sm.list_models()["Models"]}
    assert {m.rsplit("-", 1)[0] for m in models} == {"plain-ep", "mistral-ep", "qwen-ep"}
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert {"test-sagemaker", "test-manual", "tsched-schedule-lambda", "tsched-scheduler", "tgw-sagemaker",
            "tgw-gateway"} <= roles  # fmt: skip
    names = {s["Name"] for s in secrets.list_secrets()["SecretList"]}
    assert {"tsched/gated/hf-token", "tsched/manual/hf-token", "tgw/gateway-env"} <= names
    with pytest.raises(ClientError):  # Terraform created the secret, never a value
        secrets.get_secret_value(SecretId="tsched/gated/hf-token")
    scheduler = moto.client("scheduler")
    start = scheduler.get_schedule(Name="tsched-gated-ep-start")
    assert start["ScheduleExpression"] == "cron(30 6 ? * 2-6 *)"
    assert start["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert start["Target"]["Arn"].endswith(":function:tsched-schedule")
    assert moto.client("lambda").get_function(FunctionName="tsched-schedule")["Configuration"]["Runtime"]
    elb = moto.client("elbv2")
    (lb,) = elb.describe_load_balancers(Names=["tgw-gw"])["LoadBalancers"]
    (tg,) = elb.describe_target_groups(Names=["tgw-gw"])["TargetGroups"]
    assert (tg["HealthCheckPath"], tg["HealthCheckIntervalSeconds"], tg["UnhealthyThresholdCount"]) == (
        "/readyz", 10, 2)  # fmt: skip
    listeners = {x["Port"]: x for x in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]}
    assert listeners[443]["Protocol"] == "HTTPS" and listeners[80]["DefaultActions"][0]["Type"] == "redirect"
    (asg,) = moto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["tgw-gateway"])[
        "AutoScalingGroups"]  # fmt: skip
    assert asg["MinSize"] == 1 and asg["TargetGroupARNs"] == [tg["TargetGroupArn"]]
    tags = {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in asg["Tags"]}
    assert tags["managed-by"] == ("modelfleet", True) and tags["modelfleet:fleet"] == ("tgw", True)  # to instances
    assert len({i["AvailabilityZone"] for i in asg["Instances"]}) >= 1 and len(asg["VPCZoneIdentifier"].split(",")) == 2
    assert sorted(iam.list_role_policies(RoleName="tgw-gateway")["PolicyNames"]) == ["modelfleet-serve",
                                                                                     "session-manager"]  # fmt: skip
    assert not iam.list_attached_role_policies(RoleName="tgw-gateway")["AttachedPolicies"]
    fleet_yaml = moto.client("ssm").get_parameter(Name="/tgw/fleet.yaml", WithDecryption=True)["Parameter"]["Value"]
    assert "host: 0.0.0.0" in fleet_yaml and "deploy:" not in fleet_yaml
    # The gateway on Fargate: an ECS service of the task definition, behind its own ALB's target group.
    ecs = moto.client("ecs")
    (service,) = ecs.describe_services(cluster="tfg-gateway", services=["tfg-gateway"])["services"]
    (fg_tg,) = elb.describe_target_groups(Names=["tfg-gw"])["TargetGroups"]
    assert service["desiredCount"] == 1 and service["launchType"] == "FARGATE"
    assert service["loadBalancers"][0]["targetGroupArn"] == fg_tg["TargetGroupArn"] and fg_tg["TargetType"] == "ip"
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    secrets_in_task = {s["name"] for s in task["containerDefinitions"][0]["secrets"]}
    assert secrets_in_task == {"MODELFLEET_FLEET_YAML", "QUANT_KEY", "ADMIN_KEY"}  # references, never values
    alarms = {a["AlarmName"] for a in moto.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert {"plain-ep-5xx", "plain-ep-latency-p95", "plain-ep-idle", "gated-ep-5xx", "tgw-unhealthy-hosts",
            "tgw-alb-5xx"} <= alarms  # fmt: skip

    # Planned again, nothing changes: Terraform and what is there agree (SageMaker included), except where
    # moto answers unlike AWS: it echoes a launch template's own tags as a "launch-template" tag specification
    # (so the template, and the group following its version, would be updated), and it keeps neither an ECS
    # service's health check grace period nor its AZ rebalancing.
    moto_echoes = {
        "module.gateway.aws_launch_template.gateway": {"tag_specifications"},
        "module.gateway.aws_autoscaling_group.gateway": {"launch_template", "capacity_reservation_specification"},
        "module.fargate.aws_ecs_service.gateway": {
            "availability_zone_rebalancing",
            "health_check_grace_period_seconds",
        },
    }
    changed = {
        c["address"]: c["change"]
        for c in plan_json(tmp_path)["resource_changes"]
        if c["change"]["actions"] != ["no-op"]
    }
    diffs = {
        a: {k for k, v in (c["after"] or {}).items() if (c["before"] or {}).get(k) != v} for a, c in changed.items()
    }
    assert all(a in moto_echoes and d <= moto_echoes[a] for a, d in diffs.items()), diffs

    started = time.monotonic()
    tf(tmp_path, "destroy", "-auto-approve", "-input=false", timeout=900)
    destroyed = time.monotonic() - started
    print(f"\napply {applied:.0f}s, destroy {destroyed:.0f}s")

    assert _gone(sm.describe_endpoint, EndpointName="plain-ep")
    assert not sm.list_models()["Models"] and not sm.list_endpoint_configs()["EndpointConfigs"]
    assert not {"test-sagemaker", "tsched-schedule-lambda", "tgw-gateway", "tgw-sagemaker"} & {
        r["RoleName"] for r in iam.list_roles()["Roles"]}  # fmt: skip
    assert not secrets.list_secrets()["SecretList"]  # deleted (in their recovery window)
    assert not scheduler.list_schedules()["Schedules"]
    assert _gone(moto.client("lambda").get_function, FunctionName="tsched-schedule")
    assert not elb.describe_load_balancers()["LoadBalancers"] and not elb.describe_target_groups()["TargetGroups"]
    assert not moto.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    # A deleted ECS cluster stays visible as INACTIVE for a while (AWS does the same), with no active service.
    assert all(c["status"] == "INACTIVE" for c in ecs.describe_clusters(clusters=["tfg-gateway"])["clusters"])
    assert all(
        x["status"] != "ACTIVE"
        for x in ecs.describe_services(cluster="tfg-gateway", services=["tfg-gateway"])["services"]
    )
    assert not moto.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert _gone(moto.client("ssm").get_parameter, Name="/tgw/fleet.yaml")
