"""alarms.tf: the SNS topic every CloudWatch alarm notifies, with its e-mail subscriptions; and the one
shape of a CloudWatch alarm the other files use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelfleet.deploy.aws.module import Module
from modelfleet.deploy.hcl import Attr, Block, Ref


@dataclass(frozen=True)
class Alarm:
    label: str  # the Terraform resource label
    name: str
    description: str
    metric: str
    statistic: str  # Sum, Maximum, ... or a percentile (p95)
    threshold: int
    period: int = 300
    periods: int = 1
    comparison: str = "GreaterThanOrEqualToThreshold"
    missing: str = "notBreaching"  # no data: nothing happened (breaching for "too quiet" alarms)


def metric_alarm(m: Module, alarm: Alarm, namespace: str, dimensions: dict[str, Any]) -> Block:
    stat = "extended_statistic" if alarm.statistic.startswith("p") else "statistic"
    return Block(
        "resource",
        "aws_cloudwatch_metric_alarm",
        alarm.label,
        body=[
            Attr("alarm_name", alarm.name),
            Attr("alarm_description", alarm.description),
            Attr("namespace", namespace),
            Attr("metric_name", alarm.metric),
            Attr(stat, alarm.statistic),
            Attr("period", alarm.period),
            Attr("evaluation_periods", alarm.periods),
            Attr("comparison_operator", alarm.comparison),
            Attr("threshold", alarm.threshold),
            Attr("treat_missing_data", alarm.missing),
            Attr("dimensions", dimensions),
            *m.alarm_actions(),
        ],
    )


def add(m: Module) -> None:
    emails = m.deploy.alarms.emails
    if not emails:
        return
    m.add(
        "alarms.tf",
        Block(
            "resource",
            "aws_sns_topic",
            "alarms",
            body=[
                Attr("name", f"{m.prefix}-alarms"),
                Attr("kms_master_key_id", "alias/aws/sns"),
            ],
        ),
    )
    for i, email in enumerate(emails):
        m.add(
            "alarms.tf",
            Block(
                "resource",
                "aws_sns_topic_subscription",
                f"alarms_{i}",
                body=[
                    Attr("topic_arn", Ref("aws_sns_topic.alarms.arn")),
                    Attr("protocol", "email"),
                    Attr("endpoint", email),  # AWS mails a confirmation link first
                ],
            ),
        )
