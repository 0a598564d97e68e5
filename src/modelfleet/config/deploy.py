"""The fleet file's `deploy:` section: where `modelfleet deploy aws` puts the fleet.

deploy:
  name: office-hours              prefix of every AWS resource name
  region: eu-central-1
  network: {cidr: 10.42.0.0/16}   a new VPC; or {vpc_id: vpc-..., subnet_ids: [subnet-..., subnet-...]}
  gateway: ec2                    none (default): the gateway runs elsewhere; schedules run as a Lambda
                                  ec2: an Auto Scaling group; ecs-fargate: an ECS service; both behind an ALB
  certificate_arn: arn:aws:acm:...     the ALB's TLS certificate (gateway: ec2 or ecs-fargate)
  alarms: {emails: [oncall@example.com]}
  state_backend: {s3_bucket: tf-state, key: modelfleet/office-hours.tfstate}
  tags: {cost_center: cc-42}
  ci: {plan_role_arn: arn:aws:iam::...:role/fleet-plan, apply_role_arn: arn:aws:iam::...:role/fleet-apply}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelfleet import __version__

_REGION = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$"


class _Section(BaseModel):  # the same as schema._Section (schema imports this module, so not from there)
    model_config = ConfigDict(extra="forbid", frozen=True)


class Network(_Section):
    """An existing VPC and its subnets, or (unset) a new VPC with one public and one private subnet per AZ."""

    vpc_id: str | None = Field(None, pattern=r"^vpc-[0-9a-f]{8,17}$", description="an existing VPC")
    subnet_ids: list[str] = Field([], description="its subnets, in at least two AZs (the ALB needs two)")
    cidr: str = Field("10.42.0.0/16", description="a new VPC's address range")
    azs: int = Field(2, ge=2, le=6, description="how many availability zones a new VPC spans")

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, ids: list[str]) -> list[str]:
        for s in ids:
            if not re.match(r"^subnet-[0-9a-f]{8,17}$", s):
                raise ValueError(f"expected subnet IDs such as subnet-0a1b2c3d, got {s!r}")
        return ids

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        import ipaddress

        try:
            net = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError(f"expected an IPv4 range such as 10.42.0.0/16, got {value!r}") from None
        if not 16 <= net.prefixlen <= 20:
            raise ValueError(f"expected a /16 to /20 range (it is cut into /24 subnets), got {value!r}")
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> Network:
        if bool(self.vpc_id) != bool(self.subnet_ids):
            raise ValueError("deploy.network: an existing VPC needs both vpc_id and subnet_ids (two or more)")
        if self.subnet_ids and len(self.subnet_ids) < 2:
            raise ValueError("deploy.network.subnet_ids: name at least two subnets, in different AZs")
        return self

    @property
    def existing(self) -> bool:
        return self.vpc_id is not None


class GatewayHosts(_Section):
    """The gateway on EC2: an Auto Scaling group behind an ALB."""

    instance_type: str = Field("t3.small", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
    count: int = Field(2, ge=1, le=20, description="gateways; more than one adds Redis (counters) and PostgreSQL")
    package: str = Field(
        f"modelfleet[sagemaker,postgres,redis]=={__version__}", description="what the instances `pip install`"
    )


class GatewayTasks(_Section):
    """The gateway on ECS Fargate: a service behind an ALB. The container installs `package` at start;
    for production, build an image with modelfleet in it, set `image`, and set `package` to ""."""

    count: int = Field(2, ge=1, le=20, description="tasks; more than one adds Redis (counters) and PostgreSQL")
    cpu: Literal[256, 512, 1024, 2048, 4096] = 512
    memory: int = Field(1024, ge=512, le=30720, description="MiB, a size Fargate allows for `cpu`")
    image: str = Field("public.ecr.aws/docker/library/python:3.11-slim", description="the container image")
    package: str = Field(
        f"modelfleet[sagemaker,postgres,redis]=={__version__}", description="`pip install`ed at start; '' = none"
    )


class SharedState(_Section):
    """What more than one gateway shares: RDS PostgreSQL (the store) and ElastiCache Redis (limit counters)."""

    db_instance_class: str = Field("db.t4g.micro", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    cache_node_type: str = Field("cache.t4g.micro", pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")


class StateBackend(_Section):
    """Terraform's state in S3 (with S3 locking); unset: a local terraform.tfstate in the rendered folder."""

    s3_bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    key: str = "modelfleet/terraform.tfstate"
    region: str | None = Field(None, pattern=_REGION, description="the bucket's region; default: deploy.region")


class Alarms(_Section):
    """Where CloudWatch alarms go: a new SNS topic with these e-mail subscriptions, and/or an existing topic."""

    emails: list[str] = []
    sns_topic_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$")

    @field_validator("emails")
    @classmethod
    def _emails(cls, emails: list[str]) -> list[str]:
        for e in emails:
            if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", e):
                raise ValueError(f"expected e-mail addresses such as oncall@example.com, got {e!r}")
        return emails


ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$"


class CIRoles(_Section):
    """The IAM roles `modelfleet deploy ci`'s pipeline assumes through GitHub's OIDC: one per job, so a pull
    request (anyone's branch) never holds credentials that can change the account."""

    plan_role_arn: str | None = Field(
        None,
        pattern=ROLE_ARN,
        description="read-only: plan + policy on pull requests; default: secret AWS_PLANROLE_ARN",
    )
    apply_role_arn: str | None = Field(
        None,
        pattern=ROLE_ARN,
        description="applies merges (environment production); default: secret AWS_APPLYROLE_ARN",
    )

    @model_validator(mode="after")
    def _two_roles(self) -> CIRoles:
        if self.plan_role_arn is not None and self.plan_role_arn == self.apply_role_arn:
            raise ValueError(
                "deploy.ci: plan_role_arn and apply_role_arn are the same role; pull requests run with the plan "
                "role, so it must be a read-only one: give apply its own role"
            )
        return self


class Deploy(_Section):
    name: str = Field("modelfleet", description="prefix of every resource name (3-20 chars)")
    region: str = Field(pattern=_REGION, description="e.g. eu-central-1")
    network: Network = Network()
    gateway: Literal["none", "ec2", "ecs-fargate"] = Field(
        "none", description="where the gateway runs: ec2 (an ASG) or ecs-fargate (a service), behind an ALB; none"
    )
    ec2: GatewayHosts = GatewayHosts()
    fargate: GatewayTasks = GatewayTasks()
    shared_state: SharedState = SharedState()
    certificate_arn: str | None = Field(
        None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$", description="ACM, for the ALB"
    )
    state_backend: StateBackend | None = None
    alarms: Alarms = Alarms()
    tags: dict[str, str] = Field({}, description="on every resource, beside managed-by: modelfleet")
    ci: CIRoles = Field(CIRoles(), description="the IAM roles of `modelfleet deploy ci`'s pipeline")

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if key.lower().startswith("aws:") or key in ("managed-by", "modelfleet:fleet"):
                raise ValueError(f"{key!r} is reserved (aws: by AWS; managed-by and modelfleet:fleet by modelfleet)")
            if not 1 <= len(key) <= 128 or len(value) > 256:
                raise ValueError(f"AWS takes tag keys of 1-128 characters and values up to 256; {key!r} is not one")
        return tags

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # RDS, ElastiCache and ALB names take no `--` and no `-` at the end; the longest suffix is 20 chars.
        if not re.fullmatch(r"[a-z](-?[a-z0-9])+", value) or not 3 <= len(value) <= 20:
            raise ValueError(
                "expected 3 to 20 lowercase letters, digits and single hyphens, starting with a letter and "
                f"not ending with a hyphen (it prefixes every AWS resource name), such as office-hours; got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _gateway_needs_tls(self) -> Deploy:
        if self.gateway != "none" and self.certificate_arn is None:
            raise ValueError(
                "deploy.certificate_arn: the gateway's ALB serves HTTPS only; name an ACM certificate ARN "
                "such as arn:aws:acm:eu-central-1:123456789012:certificate/..."
            )
        return self

    @property
    def gateway_count(self) -> int:
        return {"ec2": self.ec2.count, "ecs-fargate": self.fargate.count}.get(self.gateway, 0)
