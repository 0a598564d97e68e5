"""Secrets named in the fleet file by reference, resolved once at start-up and never logged.

    api_key: ${VLLM_API_KEY}                          an environment variable (the loader does this)
    api_key: aws-secret://prod/vllm                   AWS Secrets Manager: the secret string
    hf_token: aws-secret://prod/hf#token?region=eu-west-1   a field of a JSON secret, in a region

Credentials and the endpoint come from the standard boto3 chain (AWS_ENDPOINT_URL too). Errors name
the field and the secret, never a value.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlparse

from pydantic import SecretStr

from modelfleet.config import Fleet, OpenAIDeployment, SageMakerDeployment
from modelfleet.errors import ConfigError

PREFIX = "aws-secret://"


def is_reference(value: SecretStr | None) -> bool:
    return value is not None and value.get_secret_value().startswith(PREFIX)


def fetch(reference: SecretStr, where: str, default_region: str | None = None) -> SecretStr:
    u = urlparse(reference.get_secret_value())
    name = (u.netloc + u.path).strip("/")
    region = parse_qs(u.query).get("region", [default_region])[0]
    try:
        import boto3

        doc = boto3.session.Session().client("secretsmanager", region_name=region).get_secret_value(SecretId=name)
    except ImportError:
        raise ConfigError([f"{where}: aws-secret:// needs boto3: pip install 'modelfleet[sagemaker]'"]) from None
    except Exception as exc:
        raise ConfigError([f"{where}: cannot read AWS secret {name!r}: {type(exc).__name__}"]) from None
    value: Any = doc.get("SecretString")
    if value is None:
        raise ConfigError([f"{where}: AWS secret {name!r} has no string value"])
    if u.fragment:
        try:
            value = json.loads(value)[u.fragment]
        except (ValueError, KeyError, TypeError):
            raise ConfigError([f"{where}: AWS secret {name!r} is not JSON with a field {u.fragment!r}"]) from None
    return SecretStr(str(value))


def resolve(fleet: Fleet) -> Fleet:
    """The fleet with every secret reference replaced by its value."""
    deployments = {}
    for name, dep in fleet.deployments.items():
        if isinstance(dep, OpenAIDeployment) and dep.api_key is not None and is_reference(dep.api_key):
            dep = dep.model_copy(update={"api_key": fetch(dep.api_key, f"deployments.{name}.api_key")})
        elif (
            isinstance(dep, SageMakerDeployment)
            and dep.create
            and dep.create.hf_token
            and is_reference(dep.create.hf_token)
        ):
            token = fetch(dep.create.hf_token, f"deployments.{name}.create.hf_token", dep.region)
            dep = dep.model_copy(update={"create": dep.create.model_copy(update={"hf_token": token})})
        deployments[name] = dep
    return fleet.model_copy(update={"deployments": deployments})
