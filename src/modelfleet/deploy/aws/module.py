"""The Terraform root module being rendered: files of HCL blocks, filled in by one module per concern."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from modelfleet.config.deploy import Deploy
from modelfleet.config.schema import Fleet, SageMakerDeployment
from modelfleet.deploy.hcl import Attr, Block, Call, Comment, Item, Ref, Template, render


class DeployError(ValueError):
    """The fleet cannot be rendered as it is: each problem names the field and what is expected."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Module:
    fleet: Fleet
    deploy: Deploy
    raw: dict[str, Any]  # the fleet file as written: ${ENV} references kept, for the gateway's copy
    tf: dict[str, list[Item]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # non-HCL files: README, Lambda, gateway files
    variables: list[Block] = field(default_factory=list)
    outputs: list[Block] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.deploy.name

    @property
    def gateway_in_aws(self) -> bool:
        return self.deploy.gateway != "none"

    def add(self, file: str, *blocks: Item) -> None:
        self.tf.setdefault(file, []).extend(blocks)

    def variable(self, name: str, type_: str, description: str, default: Any) -> None:
        self.variables.append(
            Block(
                "variable",
                name,
                body=[
                    Attr("description", description),
                    Attr("type", Ref(type_)),
                    Attr("default", default),
                ],
            )
        )

    def output(self, name: str, description: str, value: Any) -> None:
        self.outputs.append(Block("output", name, body=[Attr("description", description), Attr("value", value)]))

    def alarm_actions(self) -> list[Item]:
        """Where every alarm goes: the rendered SNS topic (deploy.alarms.emails) and/or an existing one."""
        targets: list[Any] = []
        if self.deploy.alarms.emails:
            targets.append(Ref("aws_sns_topic.alarms.arn"))
        if self.deploy.alarms.sns_topic_arn:
            targets.append(self.deploy.alarms.sns_topic_arn)
        return [Attr("alarm_actions", targets), Attr("ok_actions", targets)] if targets else []

    def sagemaker(self) -> dict[str, SageMakerDeployment]:
        """The SageMaker deployments whose endpoints modelfleet creates (those with `create:` settings)."""
        return {n: d for n, d in self.fleet.deployments.items() if isinstance(d, SageMakerDeployment) and d.create}

    def rendered(self) -> dict[str, bytes]:
        out = {name: render(blocks).encode() for name, blocks in sorted(self.tf.items()) if blocks}
        if self.variables:
            out["variables.tf"] = render(list(self.variables)).encode()
        if self.outputs:
            out["outputs.tf"] = render(list(self.outputs)).encode()
        return {**out, **self.files}


def label(name: str) -> str:
    """A Terraform resource label from a deployment name: llama/8b-chat -> llama_8b_chat."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if re.match(r"^[A-Za-z_]", out) else f"d_{out}"


def file_stem(name: str) -> str:
    """A deployment name as one file name: llama/8b -> llama_8b (a `/` would be a folder, `..` a way out)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def policy(*statements: dict[str, Any]) -> Call:
    return Call("jsonencode", {"Version": "2012-10-17", "Statement": list(statements)})


IAM_INLINE_LIMIT = 10_240  # characters of a role's inline policies, whitespace not counted
_REF_CHARS = 100  # what an ARN from a reference (a role's, a secret's) resolves to, at most about


def role_policy(m: Module, role: str, *statements: dict[str, Any]) -> Call:
    """policy(), refused at render when IAM would refuse it at apply: a fleet of many SageMaker deployments
    lists each one's ARNs, and a role holds 10,240 characters of inline policy."""

    def resolved(v: Any) -> Any:
        if isinstance(v, Ref):
            return "x" * _REF_CHARS
        if isinstance(v, str):
            return v.replace(ACCOUNT, "123456789012").replace(PARTITION, "aws").replace(REGION, m.deploy.region)
        if isinstance(v, list):
            return [resolved(x) for x in v]
        if isinstance(v, dict):
            return {k: resolved(x) for k, x in v.items()}
        return v

    doc = {"Version": "2012-10-17", "Statement": resolved(list(statements))}
    size = len(json.dumps(doc, separators=(",", ":")))
    if size > IAM_INLINE_LIMIT:
        raise DeployError(
            [
                f"deployments: the {role} role's IAM policy would be about {size:,} characters, above the "
                f"{IAM_INLINE_LIMIT:,} IAM allows a role (it lists every SageMaker endpoint, config and model "
                "by name); split the fleet into fleet files with a deploy.name each"
            ]
        )
    return policy(*statements)


def allow(actions: list[str], resources: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def assume_role(service: str) -> Call:
    return policy({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def sg_rule(name: str, kind: str, port: int, description: str, **target: Any) -> Block:
    """One TCP port in or out of a security group: `security_group_id` and its peer (`cidr_blocks` or
    `source_security_group_id`) in `target`, and an optional `skip=(check, reason)` for checkov."""
    checkov = target.pop("skip", None)
    return Block(
        "resource",
        "aws_security_group_rule",
        name,
        body=[
            *([skip(*checkov)] if checkov else []),
            Attr("type", kind),
            Attr("description", description),
            Attr("from_port", port),
            Attr("to_port", port),
            Attr("protocol", "tcp"),
            *(Attr(k, v) for k, v in target.items()),
        ],
    )


def skip(check: str, reason: str) -> Item:
    """An inline checkov skip: every finding we accept is named here, with why."""
    return Comment(f"checkov:skip={check}:{reason}")


ACCOUNT = "${local.account_id}"
PARTITION = "${local.partition}"
REGION = "${local.region}"


def arn(service: str, resource: str, region: bool = True) -> Template:
    """An ARN in this account, as an HCL template string."""
    return Template(f"arn:{PARTITION}:{service}:{REGION if region else ''}:{ACCOUNT}:{resource}")
