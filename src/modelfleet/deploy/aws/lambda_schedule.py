"""The schedule Lambda: starts and stops a SageMaker endpoint as the control plane does.

Shipped as is (standard library + boto3, which the Lambda runtime has) into the rendered folder's
lambda/ and zipped there; EventBridge Scheduler invokes it at each schedule boundary with an event
that `modelfleet deploy aws` rendered from the fleet file (events/NAME-start.json):

    {"action": "start" | "stop", "endpoint": "...", "model": {"name", "image", "role_arn", "environment"},
     "config": {"name", "instance_type", "instance_count"}, "hf_token_secret": "NAME" | null, "tags": {...}}

    start:  create the model and the endpoint config if they are missing (the HF token read from Secrets
            Manager now, so it is never in Terraform's state), then the endpoint; an endpoint that serves
            another config is moved to this one with UpdateEndpoint
    stop:   delete the endpoint; keep the model and the config, so the next start is one call

The model and config names carry the digest of their settings (modelfleet.config.sagemaker_names), the
same names the control plane uses, so `modelfleet deployments start|stop` and this Lambda agree.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger("modelfleet.schedule")
log.setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any = None, client: Any = None) -> dict[str, Any]:
    sm = client or boto3.client("sagemaker")
    endpoint = event["endpoint"]
    action = event["action"]
    status = _status(sm, endpoint)
    if action == "stop":
        if status not in (None, "Deleting"):
            log.info("deleting SageMaker endpoint %s (its model and config are kept)", endpoint)
            sm.delete_endpoint(EndpointName=endpoint)
            return {"endpoint": endpoint, "action": "deleted", "was": status}
        return {"endpoint": endpoint, "action": "none", "was": status}
    if action != "start":
        raise ValueError(f"unknown action {action!r}; expected start or stop")
    config = event["config"]["name"]
    if status not in (None, "Deleting", "Failed"):
        if status == "InService" and sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"] != config:
            _ensure_model_and_config(sm, event)
            log.info("updating SageMaker endpoint %s to config %s", endpoint, config)
            sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
            return {"endpoint": endpoint, "action": "updated", "was": status}
        return {"endpoint": endpoint, "action": "none", "was": status}
    _ensure_model_and_config(sm, event)
    if status == "Failed":
        sm.delete_endpoint(EndpointName=endpoint)
    log.info("creating SageMaker endpoint %s with config %s", endpoint, config)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config, Tags=_tags(event.get("tags") or {}))
    return {"endpoint": endpoint, "action": "created", "was": status}


def _status(sm: Any, endpoint: str) -> str | None:
    try:
        return sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"]
    except ClientError as exc:
        if "Could not find" in str(exc) or exc.response.get("Error", {}).get("Code") == "ValidationException":
            return None
        raise


def _ensure_model_and_config(sm: Any, event: dict[str, Any]) -> None:
    model, config, tags = event["model"], event["config"], _tags(event.get("tags") or {})
    try:
        sm.describe_model(ModelName=model["name"])
    except ClientError:
        env = dict(model.get("environment") or {})
        if event.get("hf_token_secret"):
            env["HF_TOKEN"] = _secret(event["hf_token_secret"])  # never logged
        sm.create_model(
            ModelName=model["name"],
            ExecutionRoleArn=model["role_arn"],
            PrimaryContainer={"Image": model["image"], "Environment": env},
            Tags=tags,
        )
    try:
        sm.describe_endpoint_config(EndpointConfigName=config["name"])
    except ClientError:
        sm.create_endpoint_config(
            EndpointConfigName=config["name"],
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model["name"],
                    "InstanceType": config["instance_type"],
                    "InitialInstanceCount": config["instance_count"],
                }
            ],
            Tags=tags,
        )


def _secret(name: str) -> str:
    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=name).get("SecretString")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise RuntimeError(
            f"cannot read the HF token secret {name!r} ({code}); set it with "
            f"aws secretsmanager put-secret-value --secret-id {name} --secret-string ..."
        ) from None
    if not value:
        raise RuntimeError(f"the HF token secret {name!r} has no value; set it with put-secret-value")
    return value


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    # The control plane's tags, so an endpoint looks the same whoever created it.
    return [{"Key": k, "Value": v} for k, v in {"managed-by": "modelfleet", **tags}.items()]


if __name__ == "__main__":  # python lambda_schedule.py '{"action": "stop", "endpoint": "..."}'
    import sys

    logging.basicConfig()
    print(json.dumps(handler(json.loads(sys.argv[1]))))
