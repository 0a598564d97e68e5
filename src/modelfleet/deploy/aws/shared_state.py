"""shared_state.tf: with more than one gateway, the state they share. RDS PostgreSQL is the store (teams,
keys, usage), ElastiCache Redis the limit counters; the gateways' fleet file points at both. The database
password is RDS-managed (Secrets Manager), so it is never in Terraform's state."""

from __future__ import annotations

from modelfleet.deploy.aws import gateway_fleet
from modelfleet.deploy.aws.module import Module, sg_rule, skip
from modelfleet.deploy.aws.network import private_subnets, vpc_id
from modelfleet.deploy.hcl import Attr, Block, Ref

FILE = "shared_state.tf"


def add(m: Module) -> None:
    if not gateway_fleet.shared_state(m):
        return
    sizes = m.deploy.shared_state
    m.add(
        FILE,
        Block(
            "resource",
            "aws_security_group",
            "state",
            body=[
                Attr("name", f"{m.prefix}-state"),
                Attr("description", "modelfleet PostgreSQL and Redis: from the gateways only"),
                Attr("vpc_id", vpc_id(m)),
            ],
        ),
        *(
            rule
            for what, port in (("postgres", 5432), ("redis", 6379))
            for rule in (
                sg_rule(
                    f"{what}_from_gateway",
                    "ingress",
                    port,
                    f"{what} from the gateways",
                    source_security_group_id=Ref("aws_security_group.gateway.id"),
                    security_group_id=Ref("aws_security_group.state.id"),
                ),
                sg_rule(
                    f"gateway_to_{what}",
                    "egress",
                    port,
                    f"to {what}",
                    source_security_group_id=Ref("aws_security_group.state.id"),
                    security_group_id=Ref("aws_security_group.gateway.id"),
                ),
            )
        ),
        Block(
            "resource",
            "aws_db_subnet_group",
            "store",
            body=[
                Attr("name", f"{m.prefix}-store"),
                Attr("subnet_ids", private_subnets(m)),
            ],
        ),
        Block(
            "resource",
            "aws_db_instance",
            "store",
            body=[
                skip("CKV_AWS_118", "enhanced monitoring needs its own role; CloudWatch has the basic metrics"),
                skip("CKV_AWS_161", "the gateway signs in with the RDS-managed password from Secrets Manager"),
                skip(
                    "CKV_AWS_293",
                    "deletion protection would stop `modelfleet deploy destroy`; a final snapshot is kept",
                ),
                skip("CKV_AWS_353", "Performance Insights is a cost choice for a small store"),
                skip("CKV2_AWS_30", "query logging would write every key lookup to the logs"),
                Attr("identifier", f"{m.prefix}-store"),
                Attr("engine", "postgres"),
                Attr("engine_version", "16"),
                Attr("instance_class", sizes.db_instance_class),
                Attr("allocated_storage", 20),
                Attr("storage_type", "gp3"),
                Attr("storage_encrypted", True),
                Attr("db_name", "modelfleet"),
                Attr("username", "modelfleet"),
                Attr("manage_master_user_password", True),  # RDS keeps it in Secrets Manager, not Terraform
                Attr("multi_az", True),
                Attr("db_subnet_group_name", Ref("aws_db_subnet_group.store.name")),
                Attr("vpc_security_group_ids", [Ref("aws_security_group.state.id")]),
                Attr("backup_retention_period", 7),
                Attr("copy_tags_to_snapshot", True),
                Attr("auto_minor_version_upgrade", True),
                Attr("enabled_cloudwatch_logs_exports", ["postgresql"]),
                Attr("skip_final_snapshot", False),
                Attr("final_snapshot_identifier", f"{m.prefix}-store-final"),
            ],
        ),
        Block(
            "resource",
            "aws_elasticache_subnet_group",
            "counters",
            body=[
                Attr("name", f"{m.prefix}-counters"),
                Attr("subnet_ids", private_subnets(m)),
            ],
        ),
        Block(
            "resource",
            "aws_elasticache_replication_group",
            "counters",
            body=[
                skip(
                    "CKV_AWS_31", "only the gateways' security group reaches it; an AUTH token would sit in the state"
                ),
                skip("CKV_AWS_191", "the AWS-managed key encrypts it at rest; a CMK is a policy choice"),
                Attr("replication_group_id", f"{m.prefix}-counters"),
                Attr("description", "modelfleet limit counters, shared by the gateways"),
                Attr("engine", "redis"),
                Attr("node_type", sizes.cache_node_type),
                Attr("num_cache_clusters", 2),
                Attr("automatic_failover_enabled", True),
                Attr("multi_az_enabled", True),
                Attr("port", 6379),
                Attr("subnet_group_name", Ref("aws_elasticache_subnet_group.counters.name")),
                Attr("security_group_ids", [Ref("aws_security_group.state.id")]),
                Attr("at_rest_encryption_enabled", True),
                Attr("transit_encryption_enabled", True),
                Attr("snapshot_retention_limit", 1),
            ],
        ),
    )
    m.output("store_address", "The gateways' PostgreSQL store.", Ref("aws_db_instance.store.address"))
    m.output(
        "counters_address",
        "The gateways' Redis counters.",
        Ref("aws_elasticache_replication_group.counters.primary_endpoint_address"),
    )
