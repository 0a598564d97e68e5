"""versions.tf and providers.tf: the pinned AWS provider, the state backend, default tags, who we are."""

from __future__ import annotations

from modelfleet.deploy.aws.module import Module
from modelfleet.deploy.hcl import Attr, Block, Call, Comment, Ref

OWN_TAGS = {"managed-by": "modelfleet"}
AWS_PROVIDER = "5.100.0"  # the version CI's offline mirror carries; bump it here, tested there


def add(m: Module) -> None:
    terraform = Block(
        "terraform",
        body=[
            Attr("required_version", ">= 1.5"),
            Block("required_providers", body=[Attr("aws", {"source": "hashicorp/aws", "version": AWS_PROVIDER})]),
        ],
    )
    if (b := m.deploy.state_backend) is not None:
        terraform.body.append(
            Block(
                "backend",
                "s3",
                body=[
                    Attr("bucket", b.s3_bucket),
                    Attr("key", b.key),
                    Attr("region", b.region or m.deploy.region),
                    Attr("encrypt", True),
                    Attr("use_lockfile", True),
                ],
            )
        )
    m.add("versions.tf", terraform)

    m.add(
        "providers.tf",
        Block(
            "provider",
            "aws",
            body=[
                Attr("region", Ref("var.region")),
                Block("default_tags", body=[Attr("tags", Ref("local.tags"))]),
            ],
        ),
        Block("data", "aws_caller_identity", "current"),
        Block("data", "aws_partition", "current"),
        Block("data", "aws_region", "current"),
        Block(
            "locals",
            body=[
                Comment("where ARNs in the least-privilege policies point: this account, this region"),
                Attr("partition", Ref("data.aws_partition.current.partition")),
                Attr("account_id", Ref("data.aws_caller_identity.current.account_id")),
                Attr("region", Ref("data.aws_region.current.name")),
                Comment("on every resource: by default_tags, and by hand where those stop (the gateways' instances)"),
                Attr("tags", Call("merge", Ref("var.tags"), OWN_TAGS | {"modelfleet:fleet": m.prefix})),
            ],
        ),
    )
    m.variable("region", "string", "The AWS region (deploy.region in the fleet file).", m.deploy.region)
    m.variable("tags", "map(string)", "Tags on every resource (deploy.tags in the fleet file).", dict(m.deploy.tags))
