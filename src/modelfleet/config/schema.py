"""The fleet file's schema: server, deployments, routes.

One vocabulary everywhere: a *deployment* is a named model server with one or more *replicas*;
a *route* is what clients send as `model`, and maps to deployments by weight.
New deployment kinds join the `Deployment` union by their `kind` tag.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    """`30`, `30s`, `500ms`, `5m`, `1h` -> seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms, 5m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"expected a duration such as 30s, 500ms, 5m or 1h, got {value!r}")


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cors(_Section):
    """CORS for browser clients such as a chat UI; off unless origins are listed."""

    allow_origins: list[str] = []
    allow_headers: list[str] = ["authorization", "content-type", "x-request-id"]
    max_age: int = Field(600, ge=0)


class Server(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="gateway processes sharing the port (SO_REUSEPORT)")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True
    drain_timeout: Duration = 30.0
    cors: Cors = Cors()


def _default_threads() -> int:
    # llama.cpp threads busy-wait; leave a core for the gateway on small machines.
    return max(1, (os.cpu_count() or 2) - 1)


class LlamaCppDeployment(_Section):
    """The embedded engine: llama-cpp-python serving a GGUF, one process per replica."""

    kind: Literal["llama-cpp"]
    model_path: Path | None = Field(None, description="GGUF file; default: the bundled SmolLM2-135M-Instruct")
    threads: int = Field(default_factory=_default_threads, ge=1, le=256)
    context_size: int = Field(2048, ge=128)
    replicas: int = Field(1, ge=1, le=64)
    max_queue: int = Field(32, ge=0, description="requests waiting for a free replica before 503")
    startup_timeout: Duration = 120.0

    @property
    def max_concurrency(self) -> int:
        return 1  # one llama.cpp context decodes one sequence at a time

    @property
    def supports_embeddings(self) -> bool:
        return False


class OpenAIDeployment(_Section):
    """Any OpenAI-compatible server (vLLM, TGI, llama.cpp server, ...) reached by URL."""

    kind: Literal["openai"]
    urls: list[str] = Field(min_length=1, description="one base URL per replica, e.g. http://gpu-1:8000/v1")
    model: str | None = Field(None, description="the upstream's model name; default: the deployment name")
    api_key: str | None = Field(None, description="sent as a bearer token; use ${ENV_VAR}")
    max_concurrency: int | None = Field(None, ge=1, description="per replica; unset = unbounded")
    max_queue: int = Field(256, ge=0)
    health_path: str = "/models"
    health_interval: Duration = 10.0
    supports_embeddings: bool = True

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"expected an http(s) base URL such as http://host:8000/v1, got {url!r}")
        return [u.rstrip("/") for u in urls]


Deployment = Annotated[LlamaCppDeployment | OpenAIDeployment, Field(discriminator="kind")]


def _weights(value: Any) -> Any:
    # `deployments: [a, b]` is shorthand for equal weights.
    if isinstance(value, list):
        return dict.fromkeys(value, 1)
    if isinstance(value, str):
        return {value: 1}
    return value


class Route(_Section):
    deployments: Annotated[dict[Name, Annotated[int, Field(ge=0)]], BeforeValidator(_weights)] = Field(
        min_length=1, description="deployment name -> weight"
    )
    timeout: Duration = Field(60.0, description="time to the first byte, and between streamed chunks")

    @field_validator("deployments")
    @classmethod
    def _some_weight(cls, weights: dict[str, int]) -> dict[str, int]:
        if not any(weights.values()):
            raise ValueError("at least one deployment needs a weight above 0")
        return weights


class Fleet(_Section):
    server: Server = Server()
    deployments: dict[Name, Deployment] = Field(min_length=1)
    routes: dict[Name, Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _routes_name_known_deployments(self) -> Fleet:
        for route_name, route in self.routes.items():
            for dep in route.deployments:
                if dep not in self.deployments:
                    known = ", ".join(sorted(self.deployments))
                    raise ValueError(f"routes.{route_name}.deployments: unknown deployment {dep!r}; defined: {known}")
        return self
