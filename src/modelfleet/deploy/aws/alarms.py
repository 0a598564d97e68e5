"""alarms.tf: the SNS topic every CloudWatch alarm notifies, with its e-mail subscriptions."""

from __future__ import annotations

from modelfleet.deploy.aws.module import Module
from modelfleet.deploy.hcl import Attr, Block, Ref


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
