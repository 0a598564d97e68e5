"""gateway.tf: the gateway on EC2. An ALB (HTTPS, HTTP redirected) in front of an Auto Scaling group
across the AZs; each instance installs modelfleet and runs `modelfleet serve` with the fleet file from
SSM Parameter Store. No SSH: the instances take traffic from the ALB only (shell: SSM Session Manager)."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from modelfleet.config.sagemaker_names import names
from modelfleet.config.schema import SageMakerDeployment
from modelfleet.deploy.aws import gateway_fleet, ownership
from modelfleet.deploy.aws.module import PARTITION, Module, allow, arn, assume_role, label, policy, skip
from modelfleet.deploy.aws.network import private_subnets, public_subnets, vpc_id
from modelfleet.deploy.aws.sagemaker import role_label
from modelfleet.deploy.hcl import Attr, Block, Call, Ref, Template

FILE = "gateway.tf"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
_ARM = re.compile(r"^[a-z]+\d+[a-z]*g[a-z]*\.")  # t4g, m7g, c7gn: Graviton


def _sg_rule(name: str, kind: str, port: int, description: str, **source: object) -> Block:
    return Block(
        "resource",
        "aws_security_group_rule",
        name,
        body=[
            *([skip(*source.pop("skip"))] if "skip" in source else []),  # type: ignore[arg-type]
            Attr("type", kind),
            Attr("description", description),
            Attr("from_port", port),
            Attr("to_port", port),
            Attr("protocol", "tcp"),
            *(Attr(k, v) for k, v in source.items()),
        ],
    )


def add(m: Module, source: str) -> None:
    if not m.gateway_in_aws:
        return
    ec2 = m.deploy.ec2
    fleet_text = gateway_fleet.render(m, source)
    m.files["gateway/fleet.yaml"] = fleet_text.encode()
    m.files["gateway/user-data.sh.tftpl"] = (
        resources.files("modelfleet.deploy.aws").joinpath("gateway_user_data.sh.tftpl").read_bytes()
    )
    m.variable(
        "certificate_arn", "string", "The ALB's TLS certificate (deploy.certificate_arn).", m.deploy.certificate_arn
    )
    m.variable(
        "gateway_instance_type", "string", "The gateways' instance type (deploy.ec2.instance_type).", ec2.instance_type
    )
    m.variable("gateway_count", "number", "How many gateways (deploy.ec2.count).", ec2.count)
    arch = "arm64" if _ARM.match(ec2.instance_type) else "x86_64"
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
        _sg_rule(
            "alb_https",
            "ingress",
            443,
            "HTTPS from clients",
            cidr_blocks=["0.0.0.0/0"],
            security_group_id=Ref("aws_security_group.alb.id"),
        ),
        _sg_rule(
            "alb_http",
            "ingress",
            80,
            "HTTP, only to be redirected to HTTPS",
            cidr_blocks=["0.0.0.0/0"],
            security_group_id=Ref("aws_security_group.alb.id"),
            skip=("CKV_AWS_260", "port 80 answers only with a redirect to HTTPS"),
        ),
        _sg_rule(
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
        _sg_rule(
            "gateway_from_alb",
            "ingress",
            gateway_fleet.PORT,
            "from the ALB",
            source_security_group_id=Ref("aws_security_group.alb.id"),
            security_group_id=Ref("aws_security_group.gateway.id"),
        ),
        _sg_rule(
            "gateway_https_out",
            "egress",
            443,
            "AWS APIs, SageMaker, PyPI and the OS packages",
            cidr_blocks=["0.0.0.0/0"],
            security_group_id=Ref("aws_security_group.gateway.id"),
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
        Block(
            "data",
            "aws_ssm_parameter",
            "al2023",
            body=[
                Attr("name", f"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"),
            ],
        ),
    )
    _role(m)
    _hosts(m, hashlib.sha256(fleet_text.encode()).hexdigest())
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
    m.output("autoscaling_group", "The gateways' Auto Scaling group.", Ref("aws_autoscaling_group.gateway.name"))


def _role(m: Module) -> None:
    """What `modelfleet serve` needs: its fleet file and secrets, and its SageMaker endpoints' lifecycle."""
    deps = {n: d for n, d in m.fleet.deployments.items() if isinstance(d, SageMakerDeployment)}
    endpoints = [arn("sagemaker", f"endpoint/{d.endpoint.lower()}") for d in deps.values()]
    created = {n: d for n, d in deps.items() if d.create}
    configs = [arn("sagemaker", f"endpoint-config/{names(d).config.lower()}") for d in created.values()]
    models = [arn("sagemaker", f"model/{names(d).model.lower()}") for d in created.values()]
    secrets = [Ref("aws_secretsmanager_secret.gateway_env.arn")]
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
    if endpoints:
        statements.append(
            allow(
                [
                    "sagemaker:InvokeEndpoint",
                    "sagemaker:InvokeEndpointWithResponseStream",
                    "sagemaker:DescribeEndpoint",
                    "sagemaker:DeleteEndpoint",
                ],
                endpoints,
            )
        )
    if created:
        statements += [
            allow(["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"], endpoints + configs),
            allow(["sagemaker:DescribeEndpointConfig", "sagemaker:CreateEndpointConfig"], configs),
            allow(["sagemaker:DescribeModel", "sagemaker:CreateModel"], models),
            allow(["sagemaker:AddTags"], endpoints + configs + models),
            allow(
                ["iam:PassRole"],
                sorted(
                    {Ref(f"aws_iam_role.{role_label(d.create.role_arn)}.arn") for d in created.values() if d.create}
                ),
                Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            ),
        ]
    m.add(
        FILE,
        Block(
            "resource",
            "aws_iam_role",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gateway"),
                Attr("assume_role_policy", assume_role("ec2.amazonaws.com")),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role_policy",
            "gateway",
            body=[
                Attr("name", "modelfleet-serve"),
                Attr("role", Ref("aws_iam_role.gateway.id")),
                Attr("policy", policy(*statements)),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role_policy_attachment",
            "gateway_ssm",
            body=[
                Attr("role", Ref("aws_iam_role.gateway.name")),  # a shell through Session Manager, instead of SSH
                Attr("policy_arn", Template(f"arn:{PARTITION}:iam::aws:policy/AmazonSSMManagedInstanceCore")),
            ],
        ),
        Block(
            "resource",
            "aws_iam_instance_profile",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gateway"),
                Attr("role", Ref("aws_iam_role.gateway.name")),
            ],
        ),
    )


def _hosts(m: Module, fleet_sha256: str) -> None:
    shared = gateway_fleet.shared_state(m)
    template_vars = {
        "region": Ref("var.region"),
        "package": m.deploy.ec2.package,
        "fleet_parameter": Ref("aws_ssm_parameter.fleet.name"),
        "fleet_sha256": fleet_sha256,
        "env_secret": Ref("aws_secretsmanager_secret.gateway_env.name"),
        "db_secret_arn": Ref("aws_db_instance.store.master_user_secret[0].secret_arn") if shared else "",
        "db_host": Ref("aws_db_instance.store.address") if shared else "",
        "redis_host": Ref("aws_elasticache_replication_group.counters.primary_endpoint_address") if shared else "",
    }
    user_data = Call("templatefile", Template("${path.module}/gateway/user-data.sh.tftpl"), template_vars)
    m.add(
        FILE,
        Block(
            "resource",
            "aws_launch_template",
            "gateway",
            body=[
                Attr("name_prefix", f"{m.prefix}-gw-"),
                Attr("image_id", Ref("data.aws_ssm_parameter.al2023.insecure_value")),
                Attr("instance_type", Ref("var.gateway_instance_type")),
                Attr("vpc_security_group_ids", [Ref("aws_security_group.gateway.id")]),
                Attr("user_data", Call("base64encode", user_data)),
                Attr("update_default_version", True),
                Block("iam_instance_profile", body=[Attr("arn", Ref("aws_iam_instance_profile.gateway.arn"))]),
                Block(
                    "metadata_options",
                    body=[
                        Attr("http_endpoint", "enabled"),
                        Attr("http_tokens", "required"),
                        Attr("http_put_response_hop_limit", 1),
                    ],
                ),
                Block("monitoring", body=[Attr("enabled", True)]),
                Block(
                    "block_device_mappings",
                    body=[
                        Attr("device_name", "/dev/xvda"),
                        Block(
                            "ebs",
                            body=[
                                Attr("volume_size", 20),
                                Attr("volume_type", "gp3"),
                                Attr("encrypted", True),
                                Attr("delete_on_termination", True),
                            ],
                        ),
                    ],
                ),
                Block(
                    "tag_specifications",
                    body=[
                        Attr("resource_type", "instance"),
                        Attr("tags", {"Name": f"{m.prefix}-gateway"}),
                    ],
                ),
            ],
        ),
        Block(
            "resource",
            "aws_autoscaling_group",
            "gateway",
            body=[
                Attr("name", f"{m.prefix}-gateway"),
                Attr("min_size", Ref("var.gateway_count")),
                Attr("desired_capacity", Ref("var.gateway_count")),
                Attr("max_size", Ref("var.gateway_count + 1")),  # room for a replacement during a refresh
                Attr("vpc_zone_identifier", private_subnets(m)),
                Attr("target_group_arns", [Ref("aws_lb_target_group.gateway.arn")]),
                Attr("health_check_type", "ELB"),  # an instance failing /readyz is replaced
                Attr("health_check_grace_period", 300),
                Block(
                    "launch_template",
                    body=[
                        Attr("id", Ref("aws_launch_template.gateway.id")),
                        Attr("version", Ref("aws_launch_template.gateway.latest_version")),
                    ],
                ),
                Block(
                    "instance_refresh",
                    body=[
                        Attr("strategy", "Rolling"),
                        Block("preferences", body=[Attr("min_healthy_percentage", 50), Attr("instance_warmup", 300)]),
                    ],
                ),
                Block(
                    "tag",
                    body=[
                        Attr("key", "Name"),
                        Attr("value", f"{m.prefix}-gateway"),
                        Attr("propagate_at_launch", True),
                    ],
                ),
            ],
        ),
    )


def _alarms(m: Module) -> None:
    dims = {"LoadBalancer": Ref("aws_lb.gateway.arn_suffix")}
    alarms = [
        (
            "gateway_unhealthy_hosts",
            "unhealthy-hosts",
            "a gateway fails /readyz (2 checks, 10 s apart)",
            "UnHealthyHostCount",
            "Maximum",
            60,
            2,
            1,
            {**dims, "TargetGroup": Ref("aws_lb_target_group.gateway.arn_suffix")},
        ),
        (
            "gateway_5xx",
            "gateway-5xx",
            "the gateways answered 5xx (10 or more in 5 minutes)",
            "HTTPCode_Target_5XX_Count",
            "Sum",
            300,
            1,
            10,
            {**dims, "TargetGroup": Ref("aws_lb_target_group.gateway.arn_suffix")},
        ),
        (
            "alb_5xx",
            "alb-5xx",
            "the ALB answered 5xx itself: no healthy gateway, or one timed out",
            "HTTPCode_ELB_5XX_Count",
            "Sum",
            300,
            1,
            10,
            dims,
        ),
    ]
    for res, name, description, metric, stat, period, periods, threshold, dimensions in alarms:
        m.add(
            FILE,
            Block(
                "resource",
                "aws_cloudwatch_metric_alarm",
                res,
                body=[
                    Attr("alarm_name", f"{m.prefix}-{name}"),
                    Attr("alarm_description", description),
                    Attr("namespace", "AWS/ApplicationELB"),
                    Attr("metric_name", metric),
                    Attr("statistic", stat),
                    Attr("period", period),
                    Attr("evaluation_periods", periods),
                    Attr("comparison_operator", "GreaterThanOrEqualToThreshold"),
                    Attr("threshold", threshold),
                    Attr("treat_missing_data", "notBreaching"),
                    Attr("dimensions", dimensions),
                    *m.alarm_actions(),
                ],
            ),
        )
