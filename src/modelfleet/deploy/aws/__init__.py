"""`modelfleet deploy aws`: the fleet file as a Terraform root module, one file per concern.

    versions.tf providers.tf variables.tf outputs.tf     the pinned provider, backend, tags, inputs
    sagemaker.tf      roles, HF-token secrets, models and configs (digest-named), endpoints, alarms
    schedules.tf      EventBridge Scheduler -> the schedule Lambda (gateway outside AWS)
    network.tf gateway.tf shared_state.tf                 the gateway on EC2 behind an ALB
    alarms.tf         the SNS topic alarms notify
    README.md, lambda/, events/, gateway/                 what the module reads, and how to use it

Every renderer adds blocks to a `Module`; `render` returns {path: bytes}, the same bytes for the same fleet.
"""

from __future__ import annotations

from typing import Any

from modelfleet.config.schema import Fleet
from modelfleet.deploy.aws import alarms, gateway, known, network, readme, root, sagemaker, schedules, shared_state
from modelfleet.deploy.aws.module import DeployError, Module

__all__ = ["DeployError", "render", "warnings"]


def warnings(fleet: Fleet) -> list[str]:
    """What renders but looks wrong: a region or instance type AWS does not have (a typo, most likely)."""
    if fleet.deploy is None:
        return []
    return known.unknown(Module(fleet=fleet, deploy=fleet.deploy, raw={}))


def render(fleet: Fleet, raw: dict[str, Any], source: str = "fleet.yaml") -> dict[str, bytes]:
    if fleet.deploy is None:
        raise DeployError(["deploy: missing; add a `deploy:` section with at least `region:`"])
    m = Module(fleet=fleet, deploy=fleet.deploy, raw=raw)
    root.add(m)
    alarms.add(m)
    sagemaker.add(m)
    schedules.add(m)
    network.add(m)
    gateway.add(m, source)
    shared_state.add(m)
    m.files["README.md"] = readme.render(m, source).encode()
    m.files[".gitignore"] = b".terraform/\n*.tfstate\n*.tfstate.*\ntfplan\n"
    return m.rendered()
