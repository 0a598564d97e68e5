"""What a SageMaker deployment's model and endpoint config are called: one pure function, shared.

The control plane (control/platforms/sagemaker.py), the Terraform renderer (deploy/aws/) and the
schedule Lambda all name things here, so `modelfleet deployments start|stop`, `terraform plan` and
a scheduled start agree on which model and config belong to which settings.

    llama-tgi-3f2a9c1e     the endpoint name, then 8 hex digits of the `create:` settings

The digest leaves out the HF token (a secret; changing it must not rename anything) and tags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from modelfleet.config.schema import SageMakerDeployment


@dataclass(frozen=True, slots=True)
class SageMakerNames:
    endpoint: str
    model: str
    config: str
    digest: str


def digest(dep: SageMakerDeployment) -> str:
    """8 hex digits of what the model and config are made of."""
    create = dep.create.model_dump(mode="json", exclude={"hf_token", "tags"}) if dep.create else {}
    return hashlib.sha256(json.dumps(create, sort_keys=True).encode()).hexdigest()[:8]


def names(dep: SageMakerDeployment) -> SageMakerNames:
    d = digest(dep)
    name = f"{dep.endpoint}-{d}"[:63]  # SageMaker names are at most 63 characters
    return SageMakerNames(endpoint=dep.endpoint, model=name, config=name, digest=d)
