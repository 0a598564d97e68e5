"""sagemaker.tf: per SageMaker deployment, its execution role, HF-token secret, log group, model and
endpoint config (named as the control plane names them), the endpoint when Terraform owns it, and alarms."""

from __future__ import annotations

import re
from typing import Any

from modelfleet.config.sagemaker_names import names
from modelfleet.config.schema import SageMakerDeployment
from modelfleet.deploy.aws import ownership
from modelfleet.deploy.aws.alarms import Alarm, metric_alarm
from modelfleet.deploy.aws.module import DeployError, Module, allow, arn, assume_role, label, role_policy, skip
from modelfleet.deploy.hcl import Attr, Block, Ref
from modelfleet.deploy.source import PLACEHOLDER_SUFFIX

FILE = "sagemaker.tf"
_ECR = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/((?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})$")
LATENCY_P95_US = 30_000_000  # ModelLatency is in microseconds: 30 s for a whole generation


_SECRET_ENV = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)($|_)", re.I)


def secret_name(m: Module, deployment: str) -> str:
    # Secrets Manager names take letters, digits and /_+=.@- (a deployment name may also hold `:`)
    return f"{m.prefix}/{re.sub(r'[^A-Za-z0-9/_+=.@-]', '-', deployment)}/hf-token"


def role_label(role_arn: str) -> str:
    return "sagemaker_" + label(_ROLE.match(role_arn).group(3))  # type: ignore[union-attr]


def container_env(dep: SageMakerDeployment) -> dict[str, str]:
    """The container's environment as the control plane sets it, the HF token left out."""
    assert dep.create is not None
    env = dict(dep.create.env)
    if dep.create.model_id:
        env.setdefault("HF_MODEL_ID", dep.create.model_id)
    return env


def lifecycle_statements(created: list[SageMakerDeployment], endpoint_actions: tuple[str, ...] = ()) -> list[dict]:
    """Start and stop these endpoints as the control plane and the schedule Lambda do: the endpoint, its
    digest-named config and model, and the execution role passed to SageMaker. One statement per kind of
    resource, so each ARN is listed once (IAM allows a role 10,240 characters of inline policy)."""
    if not created:
        return []
    endpoints = [arn("sagemaker", f"endpoint/{d.endpoint.lower()}") for d in created]
    configs = [arn("sagemaker", f"endpoint-config/{names(d).config.lower()}") for d in created]
    models = [arn("sagemaker", f"model/{names(d).model.lower()}") for d in created]
    roles = sorted({Ref(f"aws_iam_role.{role_label(d.create.role_arn)}.arn") for d in created if d.create})
    lifecycle = ["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:AddTags"]
    return [
        allow([*endpoint_actions, "sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint", *lifecycle], endpoints),
        allow(["sagemaker:DescribeEndpointConfig", "sagemaker:CreateEndpointConfig", *lifecycle], configs),
        allow(["sagemaker:DescribeModel", "sagemaker:CreateModel", "sagemaker:AddTags"], models),
        allow(["iam:PassRole"], roles, Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
    ]


def check(m: Module) -> None:
    problems = []
    labels: dict[str, str] = {}
    endpoints: dict[str, str] = {}
    for name, dep in m.sagemaker().items():
        assert dep.create is not None
        # Terraform labels, file and secret names come from the deployment name with `/`, `.`, `:` and `-`
        # made `_` or `-`: two names that meet there would render one resource twice.
        if (other := labels.setdefault(label(name), name)) != name:
            problems.append(
                f"deployments.{name}: its Terraform name {label(name)!r} is also {other!r}'s "
                "(`/ . : -` all become `_`); rename one of them"
            )
        if (other := endpoints.setdefault(dep.endpoint, name)) != name:
            problems.append(
                f"deployments.{name}.endpoint: {dep.endpoint!r} is also deployments.{other}.endpoint; "
                "each created endpoint needs a name of its own"
            )
        settings = dep.create.model_dump(mode="json", exclude={"hf_token"})
        for field, value in [*((k, v) for k, v in settings.items() if k not in ("env", "tags")),
                             *((f"env.{k}", v) for k, v in settings["env"].items()),
                             *((f"tags.{k}", v) for k, v in settings["tags"].items())]:  # fmt: skip
            if isinstance(value, str) and value.endswith(PLACEHOLDER_SUFFIX):
                problems.append(
                    f"deployments.{name}.create.{field}: its ${{VAR}} is not set here, and create: settings "
                    "are rendered as they resolve now; set it (or give a default, ${VAR:-value})"
                )
        for key in dep.create.env:
            if _SECRET_ENV.search(key):
                problems.append(
                    f"deployments.{name}.create.env.{key}: looks like a secret, and env is copied into "
                    "Terraform's state and the rendered files; put an HF token in create.hf_token "
                    "(aws-secret://NAME), other secrets in the container's own secret store"
                )
        if dep.region != m.deploy.region:
            problems.append(
                f"deployments.{name}.region: {dep.region!r} is not deploy.region {m.deploy.region!r}; "
                "one rendered module deploys to one region"
            )
        if not _ROLE.match(dep.create.role_arn):
            problems.append(
                f"deployments.{name}.create.role_arn: expected arn:aws:iam::ACCOUNT:role/NAME "
                "(the rendered module creates that role)"
            )
    if problems:
        raise DeployError(problems)


def add(m: Module) -> None:
    check(m)
    deps = m.sagemaker()
    roles: dict[str, list[tuple[str, SageMakerDeployment]]] = {}
    for name, dep in deps.items():
        assert dep.create is not None
        roles.setdefault(dep.create.role_arn, []).append((name, dep))
    for role_arn, users in roles.items():
        _role(m, role_arn, users)
    for name, dep in deps.items():
        _deployment(m, name, dep)


def _role(m: Module, role_arn: str, users: list[tuple[str, SageMakerDeployment]]) -> None:
    """The execution role: pull its image, write its own logs, read only its own HF token."""
    match = _ROLE.match(role_arn)
    assert match is not None
    path, role_name = "/" + match.group(2), match.group(3)
    lab = role_label(role_arn)
    repos = sorted(
        {
            f"arn:aws:ecr:{g[2]}:{g[1]}:repository/{g[3]}"
            for _, d in users
            if d.create and (g := _ECR.match(d.create.image))
        }
    )
    statements: list[dict[str, Any]] = []
    if repos:
        statements.append(allow(["ecr:GetAuthorizationToken"], "*"))  # AWS offers no narrower resource
        statements.append(
            allow(["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], repos)
        )
    statements.append(
        allow(
            ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            [arn("logs", f"log-group:/aws/sagemaker/Endpoints/{d.endpoint}:*") for _, d in users],
        )
    )
    statements.append(
        allow(["cloudwatch:PutMetricData"], "*", Condition={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}})
    )
    secrets = [Ref(f"aws_secretsmanager_secret.{label(n)}_hf_token.arn") for n, d in users if ownership.has_token(d)]
    if secrets:
        statements.append(allow(["secretsmanager:GetSecretValue"], secrets))
    m.add(
        FILE,
        Block(
            "resource",
            "aws_iam_role",
            lab,
            body=[
                Attr("name", role_name),
                Attr("path", path),
                Attr("description", "SageMaker execution role for " + ", ".join(n for n, _ in users)),
                Attr("assume_role_policy", assume_role("sagemaker.amazonaws.com")),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role_policy",
            lab,
            body=[
                Attr("name", "least-privilege"),
                Attr("role", Ref(f"aws_iam_role.{lab}.id")),
                Attr("policy", role_policy(m, role_name, *statements)),
            ],
        ),
    )


def _deployment(m: Module, name: str, dep: SageMakerDeployment) -> None:
    create = dep.create
    assert create is not None
    lab, named = label(name), names(dep)
    owner = ownership.endpoint_owner(dep, m.gateway_in_aws)
    if ownership.has_token(dep):
        m.add(
            FILE,
            Block(
                "resource",
                "aws_secretsmanager_secret",
                f"{lab}_hf_token",
                body=[
                    skip("CKV_AWS_149", "the AWS-managed key is enough for a Hugging Face read token"),
                    skip(
                        "CKV2_AWS_57",
                        "a Hugging Face token cannot be rotated from AWS; replace it with put-secret-value",
                    ),
                    Attr("name", secret_name(m, name)),
                    Attr(
                        "description",
                        f"HF_TOKEN for {name}; its value is set out of band (see README.md), never by Terraform",
                    ),
                    Attr("recovery_window_in_days", 7),
                ],
            ),
        )
        m.output(
            f"{lab}_hf_token_secret",
            f"Put {name}'s HF token here (aws secretsmanager put-secret-value).",
            Ref(f"aws_secretsmanager_secret.{lab}_hf_token.name"),
        )
    m.add(
        FILE,
        Block(
            "resource",
            "aws_cloudwatch_log_group",
            f"{lab}_endpoint",
            body=[
                skip("CKV_AWS_158", "CloudWatch encrypts logs at rest; a CMK is a policy choice"),
                Attr("name", f"/aws/sagemaker/Endpoints/{dep.endpoint}"),
                Attr("retention_in_days", 365),
            ],
        ),
    )
    role = role_label(create.role_arn)
    if ownership.model_by_terraform(dep):
        tags = dict(create.tags)
        m.add(
            FILE,
            Block(
                "resource",
                "aws_sagemaker_model",
                lab,
                body=[
                    skip("CKV_AWS_370", "the container downloads its weights (HF_MODEL_ID), so it needs the network"),
                    Attr("name", named.model),
                    Attr("execution_role_arn", Ref(f"aws_iam_role.{role}.arn")),
                    Block(
                        "primary_container", body=[Attr("image", create.image), Attr("environment", container_env(dep))]
                    ),
                    Attr("tags", tags),
                    Block(
                        "lifecycle",
                        body=[
                            # The name carries the settings' digest: new settings are a new model beside the old one.
                            Attr("create_before_destroy", True),
                            Attr("ignore_changes", [Ref("vpc_config")]),  # none is set; some APIs echo an empty one
                            Block(
                                "precondition",
                                body=[
                                    Attr("condition", Ref(f'aws_iam_role.{role}.arn == "{create.role_arn}"')),
                                    Attr(
                                        "error_message",
                                        f"deployments.{name}.create.role_arn names another account or path "
                                        "than this role; the names of the model and config depend on it",
                                    ),
                                ],
                            ),
                        ],
                    ),
                ],
            ),
            Block(
                "resource",
                "aws_sagemaker_endpoint_configuration",
                lab,
                body=[
                    skip("CKV_AWS_98", "SageMaker encrypts the endpoint's storage with an AWS-managed key"),
                    Attr("name", named.config),
                    Block(
                        "production_variants",
                        body=[
                            Attr("variant_name", "AllTraffic"),
                            Attr("model_name", Ref(f"aws_sagemaker_model.{lab}.name")),
                            Attr("instance_type", create.instance_type),
                            Attr("initial_instance_count", create.instance_count),
                        ],
                    ),
                    Attr("tags", tags),
                    Block(
                        "lifecycle",
                        body=[
                            Attr("create_before_destroy", True),
                            Attr(
                                "ignore_changes", [Ref("data_capture_config")]
                            ),  # none is set; some APIs echo an empty one
                        ],
                    ),
                ],
            ),
        )
    if owner == "terraform":
        m.add(
            FILE,
            Block(
                "resource",
                "aws_sagemaker_endpoint",
                lab,
                body=[
                    Attr("name", dep.endpoint),
                    Attr("endpoint_config_name", Ref(f"aws_sagemaker_endpoint_configuration.{lab}.name")),
                    Attr("tags", dict(create.tags)),
                    Block(
                        "lifecycle",
                        body=[
                            # `modelfleet deployments start` may move the endpoint to the config of newer settings.
                            Attr("ignore_changes", [Ref("endpoint_config_name")]),
                        ],
                    ),
                ],
            ),
        )
    m.output(
        f"{lab}_endpoint",
        f"{name}: the endpoint (created by: {owner}), its model and config.",
        {"endpoint": dep.endpoint, "model": named.model, "config": named.config, "created_by": owner},
    )
    _alarms(m, name, dep, always_on=owner == "terraform" or (m.gateway_in_aws and dep.schedule is None))


def _alarms(m: Module, name: str, dep: SageMakerDeployment, always_on: bool) -> None:
    lab, ep = label(name), dep.endpoint
    alarms = [
        Alarm(f"{lab}_5xx", f"{ep}-5xx", f"{name}: the container answered 5xx", "Invocation5XXErrors", "Sum", 1),
        Alarm(
            f"{lab}_latency_p95",
            f"{ep}-latency-p95",
            f"{name}: p95 model latency above 30 s for 15 min",
            "ModelLatency",
            "p95",
            LATENCY_P95_US,
            periods=3,
            comparison="GreaterThanThreshold",
        ),
    ]
    if always_on:  # a scheduled endpoint is idle off-hours by design
        alarms.append(
            Alarm(
                f"{lab}_invocations",
                f"{ep}-idle",
                f"{name}: running for an hour without invocations; it still costs: add a schedule or remove it",
                "Invocations",
                "Sum",
                1,
                period=3600,
                comparison="LessThanThreshold",
                missing="breaching",
            )
        )
    dims = {"EndpointName": ep, "VariantName": "AllTraffic"}
    m.add(FILE, *(metric_alarm(m, a, "AWS/SageMaker", dims) for a in alarms))
