"""gateway.tf, the EC2 part: a launch template whose user data installs modelfleet and runs `modelfleet
serve` (systemd) with the fleet file from SSM, and an Auto Scaling group across the AZs that replaces
gateways failing /readyz and rolls them (instance refresh) when the fleet file changes."""

from __future__ import annotations

import re
from importlib import resources

from modelfleet.deploy.aws import gateway_fleet
from modelfleet.deploy.aws.module import Module, allow, policy, skip
from modelfleet.deploy.aws.network import private_subnets
from modelfleet.deploy.hcl import Attr, Block, Call, Ref, Template

FILE = "gateway.tf"
_ARM = re.compile(r"^[a-z]+\d+[a-z]*g[a-z]*\.")  # t4g, m7g, c7gn: Graviton


def add(m: Module, fleet_sha256: str) -> None:
    ec2 = m.deploy.ec2
    m.files["gateway/user-data.sh.tftpl"] = (
        resources.files("modelfleet.deploy.aws").joinpath("gateway_user_data.sh.tftpl").read_bytes()
    )
    m.variable(
        "gateway_instance_type", "string", "The gateways' instance type (deploy.ec2.instance_type).", ec2.instance_type
    )
    arch = "arm64" if _ARM.match(ec2.instance_type) else "x86_64"
    m.add(
        FILE,
        Block(
            "data",
            "aws_ssm_parameter",
            "al2023",
            body=[
                Attr("name", f"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"),
            ],
        ),
    )
    m.add(
        FILE,
        Block(
            "resource",
            "aws_iam_role_policy",
            "gateway_session_manager",
            body=[
                skip("CKV_AWS_290", "Session Manager's channel actions take no resource narrower than *"),
                skip("CKV_AWS_355", "Session Manager's channel actions take no resource narrower than *"),
                # A shell through Session Manager instead of SSH, as AWS's minimal Session Manager profile grants
                # (AWSCloud9SSMInstanceProfile); not AmazonSSMManagedInstanceCore, which reads every SSM parameter.
                Attr("name", "session-manager"),
                Attr("role", Ref("aws_iam_role.gateway.id")),
                Attr(
                    "policy",
                    policy(
                        allow(
                            [
                                "ssm:UpdateInstanceInformation",
                                "ssmmessages:CreateControlChannel",
                                "ssmmessages:CreateDataChannel",
                                "ssmmessages:OpenControlChannel",
                                "ssmmessages:OpenDataChannel",
                            ],
                            "*",
                        )
                    ),
                ),
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
    _hosts(m, fleet_sha256)
    m.output("autoscaling_group", "The gateways' Auto Scaling group.", Ref("aws_autoscaling_group.gateway.name"))


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
                *(
                    Block(
                        "tag_specifications",
                        body=[
                            Attr("resource_type", kind),
                            Attr("tags", Call("merge", Ref("local.tags"), {"Name": f"{m.prefix}-gateway"})),
                        ],
                    )
                    for kind in ("instance", "volume")  # default_tags stop at the launch template
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
                    "dynamic",
                    "tag",
                    body=[
                        Attr("for_each", Call("merge", Ref("local.tags"), {"Name": f"{m.prefix}-gateway"})),
                        Block(
                            "content",
                            body=[
                                Attr("key", Ref("tag.key")),
                                Attr("value", Ref("tag.value")),
                                Attr("propagate_at_launch", True),
                            ],
                        ),
                    ],
                ),
            ],
        ),
    )
