"""gateway.tf: the gateway on EC2. An ALB (HTTPS, HTTP redirected) in front of an Auto Scaling group
across the AZs; each instance installs modelfleet and runs `modelfleet serve` with the fleet file from
SSM Parameter Store. No SSH: the gateways take traffic from the ALB only. What runs them is
gateway_ec2.py (an Auto Scaling group) or gateway_fargate.py (an ECS service)."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from modelfleet.config.schema import SageMakerDeployment
from modelfleet.deploy.aws import gateway_ec2, gateway_fargate, gateway_fleet, ownership
from modelfleet.deploy.aws.alarms import Alarm, metric_alarm
from modelfleet.deploy.aws.module import Module, allow, arn, assume_role, label, role_policy, sg_rule, skip
from modelfleet.deploy.aws.network import public_subnets, vpc_id
from modelfleet.deploy.aws.sagemaker import lifecycle_statements
from modelfleet.deploy.hcl import Attr, Block, Call, Ref, Template

FILE = "gateway.tf"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
INVOKE = ("sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream")


def upstream_ports(m: Module) -> list[int]:
    """The ports of the fleet's URL upstreams (kind: openai) beside 443, which the gateways must reach."""
    ports = set()
    for dep in m.fleet.deployments.values():
        for url in getattr(dep, "urls", None) or []:
            parts = urlsplit(url)
            ports.add(parts.port or (443 if parts.scheme == "https" else 80))
    return sorted(ports - {443})


def add(m: Module, source: str) -> None:
    if not m.gateway_in_aws:
        return
    fleet_text = gateway_fleet.render(m, source)
    m.files["gateway/fleet.yaml"] = fleet_text.encode()
    m.variable(
        "certificate_arn", "string", "The ALB's TLS certificate (deploy.certificate_arn).", m.deploy.certificate_arn
    )
    m.variable(
        "gateway_count",
        "number",
        "How many gateways (deploy.ec2.count or deploy.fargate.count).",
        m.deploy.gateway_count,
    )
    idle = min(4000, max(60, int(max(r.timeout for r in m.fleet.routes.values())) + 30))
    m.add(
        FILE,
        Block(
            "resource",
            "aws_security_group",
            "alb",
            body=[
                Attr("name", f"{m.prefix}-alb"),
                Attr("description", "modelfleet ALB: HTTPS from anywhere, to the gateways"),
                Attr("vpc_id", vpc_id(m)),
            ],
        ),
        sg_rule(
            "alb_https",
            "ingress",
            443,
            "HTTPS from clients",
            cidr_blocks=["0.0.0.0/0"],
            security_group_id=Ref("aws_security_group.alb.id"),
        ),
        sg_rule(
            "alb_http",
            "ingress",
            80,
            "HTTP, only to be redirected to HTTPS",
            cidr_blocks=["0.0.0.0/0"],
            security_group_id=Ref("aws_security_group.alb.id"),
            skip=("CKV_AWS_260", "port 80 answers only with a redirect to HTTPS"),
        ),
        sg_rule(
            "alb_to_gateway",
            "egress",
            gateway_fleet.PORT,
            "to the gateways",
            source_security_group_id=Ref("aws_security_group.gateway.id"),
            security_group_id=Ref("aws_security_group.alb.id"),
        ),
        Block(
            "resource",
            "aws_security_group",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gateway"),
                Attr("description", "modelfleet gateways: from the ALB only, no SSH"),
                Attr("vpc_id", vpc_id(m)),
            ],
        ),
        sg_rule(
            "gateway_from_alb",
            "ingress",
            gateway_fleet.PORT,
            "from the ALB",
            source_security_group_id=Ref("aws_security_group.alb.id"),
            security_group_id=Ref("aws_security_group.gateway.id"),
        ),
        sg_rule(
            "gateway_https_out",
            "egress",
            443,
            "AWS APIs, SageMaker, PyPI and the OS packages",
            cidr_blocks=["0.0.0.0/0"],
            security_group_id=Ref("aws_security_group.gateway.id"),
        ),
        *(
            sg_rule(
                f"gateway_to_upstream_{port}",
                "egress",
                port,
                f"upstream deployments on port {port}",
                cidr_blocks=["0.0.0.0/0"],
                security_group_id=Ref("aws_security_group.gateway.id"),
            )
            for port in upstream_ports(m)
        ),
        Block(
            "resource",
            "aws_lb",
            "gateway",
            body=[
                skip("CKV_AWS_91", "access logs need a log bucket with its own policy; add one where policy asks"),
                skip("CKV_AWS_150", "deletion protection would make `modelfleet deploy destroy` fail; set it by hand"),
                skip("CKV2_AWS_28", "a WAF is a policy choice; the gateway checks API keys and limits itself"),
                Attr("name", f"{m.prefix}-gw"),
                Attr("load_balancer_type", "application"),
                Attr("internal", False),
                Attr("security_groups", [Ref("aws_security_group.alb.id")]),
                Attr("subnets", public_subnets(m)),
                Attr("drop_invalid_header_fields", True),
                Attr("idle_timeout", idle),  # a streamed answer may pause as long as the longest route timeout
            ],
        ),
        Block(
            "resource",
            "aws_lb_target_group",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gw"),
                Attr("port", gateway_fleet.PORT),
                Attr("protocol", "HTTP"),
                Attr("target_type", "instance" if m.deploy.gateway == "ec2" else "ip"),
                Attr("vpc_id", vpc_id(m)),
                Attr("deregistration_delay", int(m.fleet.server.drain_timeout)),  # the gateway drains that long
                Block(
                    "health_check",
                    body=[
                        Attr("path", "/readyz"),
                        Attr("interval", 10),
                        Attr("unhealthy_threshold", 2),
                        Attr("healthy_threshold", 2),
                        Attr("timeout", 5),
                        Attr("matcher", "200"),
                    ],
                ),
            ],
        ),
        Block(
            "resource",
            "aws_lb_listener",
            "https",
            body=[
                Attr("load_balancer_arn", Ref("aws_lb.gateway.arn")),
                Attr("port", 443),
                Attr("protocol", "HTTPS"),
                Attr("ssl_policy", TLS_POLICY),
                Attr("certificate_arn", Ref("var.certificate_arn")),
                Block(
                    "default_action",
                    body=[
                        Attr("type", "forward"),
                        Attr("target_group_arn", Ref("aws_lb_target_group.gateway.arn")),
                    ],
                ),
            ],
        ),
        Block(
            "resource",
            "aws_lb_listener",
            "http",
            body=[
                Attr("load_balancer_arn", Ref("aws_lb.gateway.arn")),
                Attr("port", 80),
                Attr("protocol", "HTTP"),
                Block(
                    "default_action",
                    body=[
                        Attr("type", "redirect"),
                        Block(
                            "redirect",
                            body=[
                                Attr("port", "443"),
                                Attr("protocol", "HTTPS"),
                                Attr("status_code", "HTTP_301"),
                            ],
                        ),
                    ],
                ),
            ],
        ),
        Block(
            "resource",
            "aws_ssm_parameter",
            "fleet",
            body=[
                skip(
                    "CKV_AWS_337", "the fleet file holds ${ENV} references, no secrets; the AWS-managed key is enough"
                ),
                Attr("name", f"/{m.prefix}/fleet.yaml"),
                Attr("description", "The gateways' fleet file (rendered by modelfleet deploy aws)"),
                Attr("type", "SecureString"),
                Attr("tier", "Advanced" if len(fleet_text) > 4096 else "Standard"),
                Attr("value", Call("file", Template("${path.module}/gateway/fleet.yaml"))),
            ],
        ),
        Block(
            "resource",
            "aws_secretsmanager_secret",
            "gateway_env",
            body=[
                skip("CKV_AWS_149", "the AWS-managed key is enough; set a CMK where policy asks"),
                skip("CKV2_AWS_57", "team keys are rotated with `modelfleet keys`, not by a Lambda"),
                Attr("name", f"{m.prefix}/gateway-env"),
                Attr(
                    "description",
                    "The fleet file's ${VARS} as JSON, set out of band (see README.md), never by Terraform",
                ),
                Attr("recovery_window_in_days", 7),
            ],
        ),
    )
    fleet_sha256 = hashlib.sha256(fleet_text.encode()).hexdigest()
    # What `modelfleet serve` may do, the same on an instance and in a task; only who assumes the role differs.
    m.add(
        FILE,
        Block(
            "resource",
            "aws_iam_role",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gateway"),
                Attr(
                    "assume_role_policy",
                    assume_role("ec2.amazonaws.com" if m.deploy.gateway == "ec2" else "ecs-tasks.amazonaws.com"),
                ),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role_policy",
            "gateway",
            body=[
                Attr("name", "modelfleet-serve"),
                Attr("role", Ref("aws_iam_role.gateway.id")),
                Attr("policy", role_policy(m, f"{m.prefix}-gateway", *policy_statements(m))),
            ],
        ),
    )
    if m.deploy.gateway == "ec2":
        gateway_ec2.add(m, fleet_sha256)
    else:
        gateway_fargate.add(m, fleet_sha256)
    _alarms(m)
    m.output(
        "url",
        "The gateway's OpenAI-compatible base URL (point a DNS name with your certificate at it).",
        Template("https://${aws_lb.gateway.dns_name}/v1"),
    )
    m.output(
        "gateway_env_secret",
        "Put the fleet file's ${VARS} here as JSON (see README.md).",
        Ref("aws_secretsmanager_secret.gateway_env.name"),
    )
    m.output("fleet_parameter", "The gateways' fleet file in SSM.", Ref("aws_ssm_parameter.fleet.name"))


def policy_statements(m: Module) -> list[dict]:
    """What `modelfleet serve` needs: its fleet file and secrets, and its SageMaker endpoints' lifecycle."""
    deps = {n: d for n, d in m.fleet.deployments.items() if isinstance(d, SageMakerDeployment)}
    created = {n: d for n, d in deps.items() if d.create}
    watched = [arn("sagemaker", f"endpoint/{d.endpoint.lower()}") for d in deps.values() if not d.create]
    secrets: list[Ref | Template] = [Ref("aws_secretsmanager_secret.gateway_env.arn")]
    secrets += [
        Ref(f"aws_secretsmanager_secret.{label(n)}_hf_token.arn") for n, d in created.items() if ownership.has_token(d)
    ]
    for dep in m.raw.get("deployments", {}).values():  # api_key: aws-secret://NAME of an openai deployment
        ref = (dep or {}).get("api_key")
        if isinstance(ref, str) and ref.startswith("aws-secret://"):
            secrets.append(
                arn("secretsmanager", f"secret:{ref.removeprefix('aws-secret://').split('#')[0].split('?')[0]}-??????")
            )
    if gateway_fleet.shared_state(m):
        secrets.append(Ref("aws_db_instance.store.master_user_secret[0].secret_arn"))
    statements = [
        allow(["ssm:GetParameter"], Ref("aws_ssm_parameter.fleet.arn")),
        allow(["secretsmanager:GetSecretValue"], secrets),
    ]
    if watched:  # endpoints made elsewhere: the gateway calls and watches them, and `stop` deletes them
        statements.append(allow([*INVOKE, "sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint"], watched))
    return statements + lifecycle_statements(list(created.values()), endpoint_actions=INVOKE)


def _alarms(m: Module) -> None:
    lb = {"LoadBalancer": Ref("aws_lb.gateway.arn_suffix")}
    targets = {**lb, "TargetGroup": Ref("aws_lb_target_group.gateway.arn_suffix")}
    for alarm, dimensions in (
        (
            Alarm(
                "gateway_unhealthy_hosts",
                f"{m.prefix}-unhealthy-hosts",
                "a gateway fails /readyz (2 checks, 10 s apart)",
                "UnHealthyHostCount",
                "Maximum",
                1,
                period=60,
                periods=2,
            ),
            targets,
        ),
        (
            Alarm(
                "gateway_5xx",
                f"{m.prefix}-gateway-5xx",
                "the gateways answered 5xx (10 or more in 5 minutes)",
                "HTTPCode_Target_5XX_Count",
                "Sum",
                10,
            ),
            targets,
        ),
        (
            Alarm(
                "alb_5xx",
                f"{m.prefix}-alb-5xx",
                "the ALB answered 5xx itself: no healthy gateway, or one timed out",
                "HTTPCode_ELB_5XX_Count",
                "Sum",
                10,
            ),
            lb,
        ),
    ):
        m.add(FILE, metric_alarm(m, alarm, "AWS/ApplicationELB", dimensions))
