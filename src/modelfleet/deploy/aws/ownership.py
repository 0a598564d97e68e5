"""Who creates and deletes each SageMaker endpoint, so Terraform and the control plane never fight.

    Terraform                  the model and endpoint config of every deployment without an HF token
                               (named by the shared digest, kept while the endpoint comes and goes)
    the control plane          endpoints, when the gateway runs in AWS (`deploy.gateway: ec2`): it starts
                               them at boot, on a schedule and on `modelfleet deployments start|stop`
    the schedule Lambda        endpoints with a `schedule`, when the gateway runs elsewhere
    your gateway, elsewhere    endpoints that wake on request or stop when idle
    Terraform                  the endpoint itself only when nothing else manages it: no gateway in AWS,
                               no schedule, no wake or idle stop, no HF token

A deployment with an HF token gets its model and config from whoever starts it (control plane or
Lambda): they read the secret at create time, so the token never passes through Terraform's state.
"""

from __future__ import annotations

from typing import Literal

from modelfleet.config.schema import SageMakerDeployment

Owner = Literal["terraform", "control-plane", "gateway-elsewhere", "lambda", "nobody"]


def has_token(dep: SageMakerDeployment) -> bool:
    return dep.create is not None and dep.create.hf_token is not None


def model_by_terraform(dep: SageMakerDeployment) -> bool:
    return not has_token(dep)


def endpoint_owner(dep: SageMakerDeployment, gateway_in_aws: bool) -> Owner:
    if gateway_in_aws:
        return "control-plane"
    if dep.schedule is not None and (dep.schedule.start or dep.schedule.stop):
        return "lambda"
    if dep.wake_on_request or (dep.schedule is not None and dep.schedule.idle_stop_after):
        return "gateway-elsewhere"
    if has_token(dep):
        return "nobody"  # the README tells how to start it once: aws lambda invoke, or `deployments start`
    return "terraform"
