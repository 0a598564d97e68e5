"""Secrets named in the fleet file by reference, resolved once at start-up and never logged.

    api_key: ${VLLM_API_KEY}                          an environment variable (the loader does this)
    api_key: aws-secret://prod/vllm                   AWS Secrets Manager: the secret string
    hf_token: aws-secret://prod/hf#token?region=eu-west-1   a field of a JSON secret, in a region

Any field the schema marks `Secret` takes a reference (admin_key and team keys too); a deployment's
own region is the default for its references.

Credentials and the endpoint come from the standard boto3 chain (AWS_ENDPOINT_URL too). Errors name
the field and the secret, never a value.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlparse

from pydantic import SecretStr

from modelfleet.config import Fleet
from modelfleet.config.schema import MASK, REVEAL
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
    """The fleet with every secret reference replaced by its value: any field the schema marks `Secret`."""
    masked, shown = fleet.model_dump(mode="json"), fleet.model_dump(mode="json", context=REVEAL)
    found = False

    def walk(m: Any, s: Any, path: tuple[str, ...]) -> Any:
        nonlocal found
        if isinstance(m, dict):
            return {k: walk(m[k], s[k], (*path, str(k))) for k in m}
        if isinstance(m, list):
            return [walk(a, b, (*path, str(i))) for i, (a, b) in enumerate(zip(m, s, strict=True))]
        if m == MASK and isinstance(s, str) and s.startswith(PREFIX):
            found = True
            region = shown["deployments"][path[1]].get("region") if path[0] == "deployments" else None
            return fetch(SecretStr(s), ".".join(path), region).get_secret_value()
        return s

    doc = walk(masked, shown, ())
    if not found:
        return fleet
    resolved = Fleet.model_validate(doc)
    resolved.__pydantic_private__ = fleet.__pydantic_private__  # what the loader knows (which file owns what)
    return resolved
