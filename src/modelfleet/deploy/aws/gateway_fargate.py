"""gateway.tf, the ECS Fargate part: a service of `modelfleet serve` tasks across the private subnets,
registered with the ALB's target group. The fleet file comes from SSM and the fleet's ${VARS} from the
gateway-env secret, both as ECS secrets (read by ECS at task start, never in the task definition); a
new fleet file is a new task definition revision, which the service rolls out (a failing rollout is
rolled back by the deployment circuit breaker)."""

from __future__ import annotations

from modelfleet.deploy.aws import gateway_fleet
from modelfleet.deploy.aws.module import Module, allow, arn, assume_role, policy, skip
from modelfleet.deploy.aws.network import private_subnets
from modelfleet.deploy.hcl import Attr, Block, Call, Ref, Template

FILE = "gateway.tf"
CONTAINER = "modelfleet"


def _command(m: Module) -> str:
    """The container's start: install modelfleet (unless the image has it), write the fleet file, serve."""
    steps = ["set -e"]
    if m.deploy.fargate.package:
        steps.append('pip install --quiet --no-cache-dir "$MODELFLEET_PACKAGE"')
    if gateway_fleet.shared_state(m):  # the RDS password goes into a URL: percent-encode it
        steps.append(
            "export MODELFLEET_DB_PASSWORD=\"$(python3 -c 'import os, urllib.parse; "
            'print(urllib.parse.quote(os.environ["MODELFLEET_DB_SECRET"], safe=""))\')"'
        )
    steps += ['printf "%s" "$MODELFLEET_FLEET_YAML" > /tmp/fleet.yaml', "exec modelfleet serve -f /tmp/fleet.yaml"]
    return "; ".join(steps)


def add(m: Module, fleet_sha256: str) -> None:
    f = m.deploy.fargate
    shared = gateway_fleet.shared_state(m)
    log_group = f"/ecs/{m.prefix}-gateway"
    m.variable("gateway_image", "string", "The gateways' container image (deploy.fargate.image).", f.image)
    environment = [
        {"name": "AWS_DEFAULT_REGION", "value": Ref("var.region")},
        {"name": "MODELFLEET_PACKAGE", "value": f.package},
        {"name": "MODELFLEET_FLEET_SHA256", "value": fleet_sha256},  # a new fleet file: a new revision
    ]
    secrets = [{"name": "MODELFLEET_FLEET_YAML", "valueFrom": Ref("aws_ssm_parameter.fleet.arn")}]
    secrets += [
        {"name": var, "valueFrom": Template(f"${{aws_secretsmanager_secret.gateway_env.arn}}:{var}::")}
        for var in gateway_fleet.env_vars(m)
    ]
    read = [Ref("aws_secretsmanager_secret.gateway_env.arn")]
    if shared:
        environment += [
            {"name": "MODELFLEET_DB_HOST", "value": Ref("aws_db_instance.store.address")},
            {
                "name": "MODELFLEET_REDIS_HOST",
                "value": Ref("aws_elasticache_replication_group.counters.primary_endpoint_address"),
            },
        ]
        secret = "aws_db_instance.store.master_user_secret[0].secret_arn"
        secrets.append({"name": "MODELFLEET_DB_SECRET", "valueFrom": Template(f"${{{secret}}}:password::")})
        read.append(Ref(secret))
    container = {
        "name": CONTAINER,
        "image": Ref("var.gateway_image"),
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": [_command(m)],
        "portMappings": [{"containerPort": gateway_fleet.PORT, "protocol": "tcp"}],
        "environment": environment,
        "secrets": secrets,
        "stopTimeout": min(120, int(m.fleet.server.drain_timeout) + 5),  # room to drain
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": Ref("var.region"),
                "awslogs-stream-prefix": "gateway",
            },
        },
    }
    m.add(
        FILE,
        Block(
            "resource",
            "aws_iam_role",
            "gateway_execution",
            body=[
                Attr("name", f"{m.prefix}-gateway-execution"),
                Attr("assume_role_policy", assume_role("ecs-tasks.amazonaws.com")),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role_policy",
            "gateway_execution",
            body=[
                Attr("name", "start-gateway-tasks"),
                Attr("role", Ref("aws_iam_role.gateway_execution.id")),
                Attr(
                    "policy",
                    policy(
                        allow(["logs:CreateLogStream", "logs:PutLogEvents"], arn("logs", f"log-group:{log_group}:*")),
                        allow(["ssm:GetParameters"], Ref("aws_ssm_parameter.fleet.arn")),
                        allow(["secretsmanager:GetSecretValue"], read),
                    ),
                ),
            ],
        ),
        Block(
            "resource",
            "aws_cloudwatch_log_group",
            "gateway",
            body=[
                skip("CKV_AWS_158", "CloudWatch encrypts logs at rest; a CMK is a policy choice"),
                Attr("name", log_group),
                Attr("retention_in_days", 365),
            ],
        ),
        Block(
            "resource",
            "aws_ecs_cluster",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gateway"),
                Block("setting", body=[Attr("name", "containerInsights"), Attr("value", "enabled")]),
            ],
        ),
        Block(
            "resource",
            "aws_ecs_task_definition",
            "gateway",
            body=[
                skip("CKV_AWS_336", "the container writes the fleet file (and installs modelfleet) at start"),
                Attr("family", f"{m.prefix}-gateway"),
                Attr("requires_compatibilities", ["FARGATE"]),
                Attr("network_mode", "awsvpc"),
                Attr("cpu", str(f.cpu)),
                Attr("memory", str(f.memory)),
                Attr("execution_role_arn", Ref("aws_iam_role.gateway_execution.arn")),
                Attr("task_role_arn", Ref("aws_iam_role.gateway.arn")),
                Attr("container_definitions", Call("jsonencode", [container])),
            ],
        ),
        Block(
            "resource",
            "aws_ecs_service",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gateway"),
                Attr("cluster", Ref("aws_ecs_cluster.gateway.id")),
                Attr("task_definition", Ref("aws_ecs_task_definition.gateway.arn")),
                Attr("desired_count", Ref("var.gateway_count")),
                Attr("launch_type", "FARGATE"),
                Attr("health_check_grace_period_seconds", 300),  # pip install at start takes a while
                Attr("deployment_minimum_healthy_percent", 50),
                Attr("deployment_maximum_percent", 200),
                Attr("availability_zone_rebalancing", "ENABLED"),  # back across the AZs after an AZ outage
                Block("deployment_circuit_breaker", body=[Attr("enable", True), Attr("rollback", True)]),
                Block(
                    "network_configuration",
                    body=[
                        Attr("subnets", private_subnets(m)),
                        Attr("security_groups", [Ref("aws_security_group.gateway.id")]),
                        Attr("assign_public_ip", False),
                    ],
                ),
                Block(
                    "load_balancer",
                    body=[
                        Attr("target_group_arn", Ref("aws_lb_target_group.gateway.arn")),
                        Attr("container_name", CONTAINER),
                        Attr("container_port", gateway_fleet.PORT),
                    ],
                ),
                Attr("depends_on", [Ref("aws_lb_listener.https")]),
            ],
        ),
    )
    m.output(
        "ecs_service",
        "The gateways' ECS service (cluster/service).",
        Template(f"{m.prefix}-gateway/{m.prefix}-gateway"),
    )
