"""schedules.tf: with the gateway outside AWS, each deployment's `schedule` becomes EventBridge Scheduler
schedules (cron + timezone) that invoke the schedule Lambda (lambda_schedule.py) with a rendered event.

With the gateway in AWS its control plane keeps the schedules, and none of this is rendered.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from importlib import resources
from typing import Any

from modelfleet.config.sagemaker_names import names, shorten
from modelfleet.config.schema import SageMakerDeployment
from modelfleet.deploy.aws import ownership
from modelfleet.deploy.aws.module import (
    DeployError,
    Module,
    allow,
    arn,
    assume_role,
    file_stem,
    label,
    policy,
    role_policy,
    skip,
)
from modelfleet.deploy.aws.sagemaker import container_env, lifecycle_statements, secret_name
from modelfleet.deploy.hcl import Attr, Block, Call, Ref, Template

FILE = "schedules.tf"
ZIP = "lambda/schedule.zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: fixed, so the bytes never change


def aws_cron(cron: str, where: str) -> str:
    """A 5-field cron ("0 7 * * MON-FRI") as EventBridge writes it: cron(0 7 ? * MON-FRI *)."""
    fields = cron.split()
    if len(fields) != 5:
        raise DeployError([f'{where}: EventBridge needs a 5-field cron such as "0 7 * * MON-FRI", got {cron!r}'])
    minute, hour, dom, month, dow = fields
    if dom != "*" and dow != "*":
        raise DeployError([f"{where}: EventBridge cannot combine a day of month and a day of week ({cron!r})"])
    if "/" in dow:
        raise DeployError([f"{where}: EventBridge has no step in the day of week ({cron!r}); list the days"])
    # cron counts Sunday as 0 (or 7), EventBridge as 1: shift the numbers, names stay.
    dow = re.sub(r"\d+", lambda d: str(int(d.group()) % 7 + 1), dow)
    dom, dow = (dom, "?") if dow == "*" else ("?", dow)
    return f"cron({minute} {hour} {dom} {month} {dow} *)"


def event(m: Module, name: str, dep: SageMakerDeployment, action: str) -> dict[str, Any]:
    create = dep.create
    assert create is not None
    named = names(dep)
    return {
        "action": action,
        "endpoint": dep.endpoint,
        "model": {
            "name": named.model,
            "image": create.image,
            "role_arn": create.role_arn,
            "environment": container_env(dep),
        },
        "config": {
            "name": named.config,
            "instance_type": create.instance_type,
            "instance_count": create.instance_count,
        },
        "hf_token_secret": secret_name(m, name) if ownership.has_token(dep) else None,
        "tags": dict(create.tags),
    }


def event_file(name: str, action: str) -> str:
    return f"events/{file_stem(name)}-{action}.json"


def schedule_name(m: Module, dep: SageMakerDeployment, action: str) -> str:
    """At most 64 characters, as Scheduler allows; a long endpoint name is shortened, never the action
    (cut off, start and stop would share one name)."""
    return f"{m.prefix}-{shorten(dep.endpoint, 64 - len(m.prefix) - len(action) - 2)}-{action}"


def lambda_zip(source: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("lambda_schedule.py", date_time=_EPOCH)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, source)
    return buf.getvalue()


def add(m: Module) -> None:
    if m.gateway_in_aws:
        return
    lambda_deps = {n: d for n, d in m.sagemaker().items() if ownership.endpoint_owner(d, False) in ("lambda", "nobody")}
    if not lambda_deps:
        return
    source = resources.files("modelfleet.deploy.aws").joinpath("lambda_schedule.py").read_bytes()
    m.files["lambda/lambda_schedule.py"] = source
    m.files[ZIP] = lambda_zip(source)
    fn = f"{m.prefix}-schedule"
    for name, dep in lambda_deps.items():
        for action in ("start", "stop"):
            m.files[event_file(name, action)] = (json.dumps(event(m, name, dep, action), indent=2) + "\n").encode()
    _function(m, fn, lambda_deps)
    for name, dep in lambda_deps.items():
        if dep.schedule is None:
            continue
        for action, cron in (("start", dep.schedule.start), ("stop", dep.schedule.stop)):
            if cron is None:
                continue
            where = f"deployments.{name}.schedule.{action}"
            m.add(
                FILE,
                Block(
                    "resource",
                    "aws_scheduler_schedule",
                    f"{label(name)}_{action}",
                    body=[
                        skip(
                            "CKV_AWS_297",
                            "the event names settings and a secret's name, never a secret; AWS encrypts it",
                        ),
                        Attr("name", schedule_name(m, dep, action)),
                        Attr("description", f"{action} {name} at {cron!r} ({dep.schedule.timezone})"),
                        Attr("schedule_expression", aws_cron(cron, where)),
                        Attr("schedule_expression_timezone", dep.schedule.timezone),
                        Block("flexible_time_window", body=[Attr("mode", "OFF")]),
                        Block(
                            "target",
                            body=[
                                Attr("arn", Ref("aws_lambda_function.schedule.arn")),
                                Attr("role_arn", Ref("aws_iam_role.scheduler.arn")),
                                Attr("input", Call("file", Template(f"${{path.module}}/{event_file(name, action)}"))),
                                Block(
                                    "retry_policy",
                                    body=[
                                        Attr("maximum_event_age_in_seconds", 3600),
                                        Attr("maximum_retry_attempts", 5),
                                    ],
                                ),
                            ],
                        ),
                    ],
                ),
            )


def _function(m: Module, fn: str, deps: dict[str, SageMakerDeployment]) -> None:
    statements = [
        allow(["logs:CreateLogStream", "logs:PutLogEvents"], arn("logs", f"log-group:/aws/lambda/{fn}:*")),
        *lifecycle_statements(list(deps.values())),
    ]
    secrets = [
        Ref(f"aws_secretsmanager_secret.{label(n)}_hf_token.arn") for n, d in deps.items() if ownership.has_token(d)
    ]
    if secrets:
        statements.append(allow(["secretsmanager:GetSecretValue"], secrets))
    m.add(
        FILE,
        Block(
            "resource",
            "aws_iam_role",
            "schedule_lambda",
            body=[
                Attr("name", f"{m.prefix}-schedule-lambda"),
                Attr("assume_role_policy", assume_role("lambda.amazonaws.com")),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role_policy",
            "schedule_lambda",
            body=[
                Attr("name", "start-stop-endpoints"),
                Attr("role", Ref("aws_iam_role.schedule_lambda.id")),
                Attr("policy", role_policy(m, f"{m.prefix}-schedule-lambda", *statements)),
            ],
        ),
        Block(
            "resource",
            "aws_cloudwatch_log_group",
            "schedule_lambda",
            body=[
                skip("CKV_AWS_158", "CloudWatch encrypts logs at rest; a CMK is a policy choice"),
                Attr("name", f"/aws/lambda/{fn}"),
                Attr("retention_in_days", 365),
            ],
        ),
        Block(
            "resource",
            "aws_lambda_function",
            "schedule",
            body=[
                skip("CKV_AWS_50", "X-Ray adds nothing to two SageMaker calls; the log group has each run"),
                skip("CKV_AWS_115", "runs only at schedule boundaries; a reserved limit would only throttle them"),
                skip("CKV_AWS_116", "Scheduler retries failed runs (retry_policy); there is no queue to drain"),
                skip("CKV_AWS_117", "it calls only AWS APIs; a VPC would need NAT or endpoints for nothing"),
                skip("CKV_AWS_272", "the code is rendered from the fleet file beside this module; review it there"),
                Attr("function_name", fn),
                Attr("description", "Starts and stops SageMaker endpoints on the fleet's schedules (modelfleet)"),
                Attr("role", Ref("aws_iam_role.schedule_lambda.arn")),
                Attr("runtime", "python3.12"),
                Attr("handler", "lambda_schedule.handler"),
                Attr("filename", Template(f"${{path.module}}/{ZIP}")),
                Attr("source_code_hash", Call("filebase64sha256", Template(f"${{path.module}}/{ZIP}"))),
                Attr("timeout", 60),
                Attr("depends_on", [Ref("aws_cloudwatch_log_group.schedule_lambda")]),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role",
            "scheduler",
            body=[
                Attr("name", f"{m.prefix}-scheduler"),
                Attr("assume_role_policy", assume_role("scheduler.amazonaws.com")),
            ],
        ),
        Block(
            "resource",
            "aws_iam_role_policy",
            "scheduler",
            body=[
                Attr("name", "invoke-schedule-lambda"),
                Attr("role", Ref("aws_iam_role.scheduler.id")),
                Attr("policy", policy(allow(["lambda:InvokeFunction"], Ref("aws_lambda_function.schedule.arn")))),
            ],
        ),
    )
    m.output(
        "schedule_lambda",
        "Start or stop a deployment by hand: aws lambda invoke --function-name THIS "
        "--cli-binary-format raw-in-base64-out --payload file://events/NAME-start.json out.json",
        Ref("aws_lambda_function.schedule.function_name"),
    )
