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


def shorten(name: str, limit: int) -> str:
    """`name` if it fits in `limit` characters, else its head and 8 hex digits of the whole name: two long
    names that share a head stay apart, and the result is the same on every machine."""
    if len(name) <= limit:
        return name
    tail = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{tail}"


def names(dep: SageMakerDeployment) -> SageMakerNames:
    d = digest(dep)
    # SageMaker names are at most 63 characters: shorten the endpoint part, never the digest (cutting it
    # would give new settings the old name, and Terraform and the control plane would fight over it).
    name = f"{shorten(dep.endpoint, 63 - 9)}-{d}"
    return SageMakerNames(endpoint=dep.endpoint, model=name, config=name, digest=d)
