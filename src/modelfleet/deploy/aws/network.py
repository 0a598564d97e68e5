"""network.tf: where the gateway runs. An existing VPC and subnets from the fleet file, or a new VPC:
per AZ one public subnet (the ALB, the NAT gateway) and one private subnet (gateways, Redis, PostgreSQL)."""

from __future__ import annotations

from modelfleet.deploy.aws.module import Module, skip
from modelfleet.deploy.hcl import Attr, Block, Ref, Template

FILE = "network.tf"


def public_subnets(m: Module) -> Ref | list[str]:
    return list(m.deploy.network.subnet_ids) if m.deploy.network.existing else Ref("aws_subnet.public[*].id")


def private_subnets(m: Module) -> Ref | list[str]:
    return list(m.deploy.network.subnet_ids) if m.deploy.network.existing else Ref("aws_subnet.private[*].id")


def vpc_id(m: Module) -> Ref | str:
    return m.deploy.network.vpc_id if m.deploy.network.existing else Ref("aws_vpc.main.id")  # type: ignore[return-value]


def add(m: Module) -> None:
    if not m.gateway_in_aws or m.deploy.network.existing:
        return
    net = m.deploy.network
    m.variable("vpc_cidr", "string", "The new VPC's address range (deploy.network.cidr).", net.cidr)
    azs = Ref(f"slice(data.aws_availability_zones.available.names, 0, {net.azs})")
    m.add(
        FILE,
        Block(
            "data",
            "aws_availability_zones",
            "available",
            body=[
                skip("CKV_AWS_394", "only the first deploy.network.azs zones are used (slice below)"),
                Attr("state", "available"),
            ],
        ),
        Block(
            "resource",
            "aws_vpc",
            "main",
            body=[
                skip("CKV2_AWS_11", "flow logs cost per GB; turn them on where policy asks for them"),
                Attr("cidr_block", Ref("var.vpc_cidr")),
                Attr("enable_dns_support", True),
                Attr("enable_dns_hostnames", True),
                Attr("tags", {"Name": m.prefix}),
            ],
        ),
        Block(
            "resource",
            "aws_default_security_group",
            "main",
            body=[
                Attr("vpc_id", Ref("aws_vpc.main.id")),  # no rules: the default group lets nothing through
            ],
        ),
        Block(
            "resource",
            "aws_internet_gateway",
            "main",
            body=[
                Attr("vpc_id", Ref("aws_vpc.main.id")),
                Attr("tags", {"Name": m.prefix}),
            ],
        ),
        Block(
            "resource",
            "aws_subnet",
            "public",
            body=[
                Attr("count", net.azs),
                Attr("vpc_id", Ref("aws_vpc.main.id")),
                Attr("cidr_block", Ref("cidrsubnet(var.vpc_cidr, 8, count.index)")),
                Attr("availability_zone", Ref(f"{azs}[count.index]")),
                Attr("tags", {"Name": Template(f"{m.prefix}-public-${{count.index}}")}),
            ],
        ),
        Block(
            "resource",
            "aws_subnet",
            "private",
            body=[
                Attr("count", net.azs),
                Attr("vpc_id", Ref("aws_vpc.main.id")),
                Attr("cidr_block", Ref("cidrsubnet(var.vpc_cidr, 8, 100 + count.index)")),
                Attr("availability_zone", Ref(f"{azs}[count.index]")),
                Attr("tags", {"Name": Template(f"{m.prefix}-private-${{count.index}}")}),
            ],
        ),
        Block("resource", "aws_eip", "nat", body=[Attr("domain", "vpc"), Attr("tags", {"Name": f"{m.prefix}-nat"})]),
        Block(
            "resource",
            "aws_nat_gateway",
            "main",
            body=[
                Attr("allocation_id", Ref("aws_eip.nat.id")),
                Attr("subnet_id", Ref("aws_subnet.public[0].id")),
                Attr("tags", {"Name": m.prefix}),
                Attr("depends_on", [Ref("aws_internet_gateway.main")]),
            ],
        ),
        Block(
            "resource",
            "aws_route_table",
            "public",
            body=[
                Attr("vpc_id", Ref("aws_vpc.main.id")),
                Block(
                    "route",
                    body=[
                        Attr("cidr_block", "0.0.0.0/0"),
                        Attr("gateway_id", Ref("aws_internet_gateway.main.id")),
                    ],
                ),
            ],
        ),
        Block(
            "resource",
            "aws_route_table",
            "private",
            body=[
                Attr("vpc_id", Ref("aws_vpc.main.id")),
                Block(
                    "route",
                    body=[
                        Attr("cidr_block", "0.0.0.0/0"),
                        Attr("nat_gateway_id", Ref("aws_nat_gateway.main.id")),
                    ],
                ),
            ],
        ),
        Block(
            "resource",
            "aws_route_table_association",
            "public",
            body=[
                Attr("count", net.azs),
                Attr("subnet_id", Ref("aws_subnet.public[count.index].id")),
                Attr("route_table_id", Ref("aws_route_table.public.id")),
            ],
        ),
        Block(
            "resource",
            "aws_route_table_association",
            "private",
            body=[
                Attr("count", net.azs),
                Attr("subnet_id", Ref("aws_subnet.private[count.index].id")),
                Attr("route_table_id", Ref("aws_route_table.private.id")),
            ],
        ),
    )
