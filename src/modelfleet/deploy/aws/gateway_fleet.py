"""gateway/fleet.yaml: the fleet file the gateways run, rendered from the one you wrote.

It is your file as written (${ENV} references kept: the instances resolve them from the gateway-env
secret) with the `deploy:` section left out, the server listening for the ALB, the state in RDS and
Redis when there is more than one gateway, and each HF token read from the secret the module creates.
A literal secret is refused: it would be copied into SSM and Terraform's state.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

import yaml

from modelfleet.deploy.aws import ownership
from modelfleet.deploy.aws.module import DeployError, Module
from modelfleet.deploy.aws.sagemaker import secret_name
from modelfleet.deploy.source import env_references

PORT = 8000
STORE = "postgresql://modelfleet:${MODELFLEET_DB_PASSWORD}@${MODELFLEET_DB_HOST}:5432/modelfleet?sslmode=require"
COUNTERS = "rediss://${MODELFLEET_REDIS_HOST}:6379/0"
SQLITE = "sqlite:////var/lib/modelfleet/modelfleet.db"
_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def env_vars(m: Module) -> list[str]:
    """The ${VARS} the gateways' fleet file refers to: what the gateway-env secret holds."""
    return env_references({k: v for k, v in m.raw.items() if k != "deploy"})


def shared_state(m: Module) -> bool:
    return m.deploy.gateway_count > 1


def render(m: Module, source: str) -> str:
    if "include" in m.raw:
        raise DeployError(
            [
                "include: a gateway in AWS gets one fleet file (in SSM), and the team files a platform fleet "
                "includes would not reach it; render with `gateway: none`, or merge the teams into the file"
            ]
        )
    doc: dict[str, Any] = copy.deepcopy(m.raw)
    doc.pop("deploy", None)
    _refuse_literal_secrets(doc)
    server = doc.setdefault("server", {})
    server.update(host="0.0.0.0", port=PORT)  # the ALB reaches it; the security group lets only the ALB in
    state = doc.setdefault("state", {})
    if shared_state(m):
        state.update(store=STORE, counters=COUNTERS)
    elif not str(state.get("store", "")).startswith("postgres"):
        state["store"] = SQLITE
    for name, dep in m.fleet.deployments.items():
        if dep.kind == "llama-cpp":
            raise DeployError(
                [
                    f"deployments.{name}: a llama-cpp engine does not run on the gateway instances; "
                    "serve the model elsewhere (kind: openai or sagemaker) for a gateway on EC2"
                ]
            )
    for name, dep in m.sagemaker().items():
        if ownership.has_token(dep):
            doc["deployments"][name]["create"]["hf_token"] = f"aws-secret://{secret_name(m, name)}"
        if dep.chat_template is not None:
            raise DeployError(
                [
                    f"deployments.{name}.chat_template: a gateway on EC2 cannot read a file from this "
                    "machine; use `container: messages` (TGI and DJL-LMI take chat requests)"
                ]
            )
    head = (
        f"# The gateways' fleet file, rendered by `modelfleet deploy aws` from {source}: edit that file,\n"
        "# not this one. ${VARS} come from the gateway-env secret and the instances (see README.md).\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def _refuse_literal_secrets(doc: dict[str, Any]) -> None:
    problems = []

    def literal(value: Any, refs: tuple[str, ...] = ()) -> bool:
        return isinstance(value, str) and not _ENV_REF.match(value) and not value.startswith(refs)

    for team, t in (doc.get("teams") or {}).items():
        if any(literal(k) for k in (t or {}).get("keys") or []):
            problems.append(
                f"teams.{team}.keys: write each key as ${{ENV_VAR}}; a literal key would be copied "
                "into SSM and Terraform's state"
            )
    if literal((doc.get("auth") or {}).get("admin_key")):
        problems.append("auth.admin_key: write it as ${ENV_VAR}; a literal key would be copied into SSM")
    for field in ("store", "counters"):  # postgresql://user:PASSWORD@host/db, rediss://:PASSWORD@host
        url = (doc.get("state") or {}).get(field)
        password = urlsplit(url).password if isinstance(url, str) and "://" in url else None
        if password is not None and not _ENV_REF.match(password):
            problems.append(
                f"state.{field}: write the URL's password as ${{ENV_VAR}}; a literal one would be copied "
                "into SSM and Terraform's state"
            )
    for name, dep in (doc.get("deployments") or {}).items():
        if literal((dep or {}).get("api_key"), ("aws-secret://",)):
            problems.append(f"deployments.{name}.api_key: write it as ${{ENV_VAR}} or aws-secret://NAME")
    if problems:
        raise DeployError(problems)
