"""The fleet file's schema: server, state, auth, teams, deployments, routes.

One vocabulary everywhere: a *deployment* is a named model server with one or more *replicas*;
a *route* is what clients send as `model`, and maps to deployments by weight; a *team* holds API
keys, the routes it may use and its limits.
New deployment kinds join the `Deployment` union by their `kind` tag.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    SerializationInfo,
    field_validator,
    model_validator,
)

from modelfleet.config.deploy import Deploy
from modelfleet.config.policy import Policy

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

MASK = "**********"
REVEAL = {"reveal_secrets": True}  # the serialisation context that hands secrets on (to gateway workers only)


def _serialize_secret(value: SecretStr, info: SerializationInfo) -> str:
    return value.get_secret_value() if info.context and info.context.get("reveal_secrets") else MASK


def _long_enough(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 16:
        raise ValueError("expected at least 16 characters")
    return value


# The one mark of a secret: its value never prints (config show, errors, logs); code that needs it calls
# .get_secret_value(). The loader's error messages and `config show` find secret fields by this type.
Secret = Annotated[SecretStr, PlainSerializer(_serialize_secret, when_used="always")]
Key = Annotated[Secret, AfterValidator(_long_enough)]


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
    header_timeout: Duration = Field(
        65.0,
        description="for a request's headers to arrive, and for an idle keep-alive connection; behind a load "
        "balancer keep it above the balancer's idle timeout (ALB: 60s)",
    )
    body_timeout: Duration = Field(30.0, description="for a request's body to arrive, once its headers have (408)")
    write_timeout: Duration = Field(30.0, description="a stream whose client takes no bytes this long is cut off")
    cors: Cors = Cors()


def _default_state_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.environ.get("MODELFLEET_HOME") or os.path.join(base, "modelfleet")


def _shown(url: str) -> str:
    """A URL for an error message: a password in it is not shown."""
    return repr(re.sub(r"(//[^:/@\s]*:)[^@\s]*@", r"\1***@", url))


class State(_Section):
    """Where keys, teams and the usage ledger live, and where limit counters are kept."""

    store: str = Field(
        default_factory=lambda: "sqlite:///" + os.path.join(_default_state_dir(), "modelfleet.db"),
        description="sqlite:///path/to/file.db or postgresql://user:pass@host/db",
    )
    counters: str = Field("memory", description="memory (this process) or redis://host:6379/0 (shared by gateways)")
    flush_interval: Duration = Field(2.0, description="usage is aggregated in memory and written this often")
    refresh_interval: Duration = Field(5.0, description="how often teams and keys are re-read from the store")

    @field_validator("store")
    @classmethod
    def _known_store(cls, url: str) -> str:
        if not re.match(r"^(sqlite:///.+|postgres(ql)?://.+)$", url):
            raise ValueError(f"expected sqlite:///path/file.db or postgresql://user:pass@host/db, got {_shown(url)}")
        return url

    @field_validator("counters")
    @classmethod
    def _known_counters(cls, url: str) -> str:
        if url != "memory" and not re.match(r"^rediss?://.+", url):
            raise ValueError(f"expected 'memory' or redis://host:6379/0, got {_shown(url)}")
        return url


class Auth(_Section):
    admin_key: Key | None = Field(
        None, description="bearer key for /admin; use ${ENV_VAR}; unset = the admin API is off"
    )
    metrics_key: Key | None = Field(
        None,
        description="bearer key that reads /metrics and nothing else (for Prometheus). With teams configured, "
        "/metrics names every team and its usage, so it needs this key or the admin key",
    )


class Limits(_Section):
    """Per team. Unset = unlimited. Token limits count prompt + completion tokens."""

    rpm: int | None = Field(None, ge=1, description="requests per minute (sliding window)")
    tpm: int | None = Field(None, ge=1, description="tokens per minute (sliding window)")
    concurrency: int | None = Field(None, ge=1, description="requests in flight at once")
    tokens_per_day: int | None = Field(None, ge=1, description="budget per UTC day")
    tokens_per_month: int | None = Field(None, ge=1, description="budget per UTC calendar month")

    @property
    def tokens(self) -> bool:
        return bool(self.tpm or self.tokens_per_day or self.tokens_per_month)


class Team(_Section):
    keys: list[Key] = Field(
        [], description="API keys, usually ${ENV_VAR}; hashed when loaded. More: `modelfleet keys create`"
    )
    routes: list[Name] | Literal["*"] = Field("*", description="routes the team may use; * = all")
    limits: Limits = Limits()
    timeout: Duration | None = Field(None, description="caps the route timeout for this team's requests")
    tags: dict[str, str] = Field({}, description="free-form labels, e.g. cost_center: cc-42")


def _default_threads() -> int:
    # llama.cpp threads busy-wait; leave a core for the gateway on small machines.
    return max(1, (os.cpu_count() or 2) - 1)


class Health(_Section):
    """Active checks and passive ejection of a deployment's replicas."""

    interval: Duration = Field(10.0, description="between active checks (GET {url}{path})")
    timeout: Duration = 2.0
    path: str = "/models"
    unhealthy_after: int = Field(2, ge=1, description="consecutive failed checks before a replica is out")
    healthy_after: int = Field(1, ge=1, description="consecutive passed checks before it is back")
    eject_after: int = Field(3, ge=1, description="consecutive failed requests before a replica is ejected")
    eject_for: Duration = Field(5.0, description="cool-down before an ejected replica is checked again")


class LoadMetrics(_Section):
    """Scrape vLLM's engine metrics (GET {url without /v1}/metrics) to prefer less loaded replicas."""

    interval: Duration = 0.25
    stale_after: Duration = Field(2.0, description="older readings count as unknown, never as idle")
    path: str = "/metrics"


class Schedule(_Section):
    """When a deployment runs: cron boundaries in a timezone, and an idle stop."""

    start: str | None = Field(None, description='cron, e.g. "0 7 * * MON-FRI"')
    stop: str | None = Field(None, description='cron, e.g. "0 18 * * MON-FRI"')
    timezone: str = "UTC"
    idle_stop_after: Duration | None = Field(None, description="stop after this long without a request")
    wake_off_hours: bool = Field(True, description="may a request wake it between stop and start?")

    @field_validator("start", "stop")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f'expected a cron expression such as "0 7 * * MON-FRI", got {value!r}')
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA timezone such as Europe/Berlin or UTC, got {value!r}") from None
        return value


class _Managed(_Section):
    """What every deployment kind shares: its lifecycle."""

    schedule: Schedule | None = None
    wake_on_request: bool = Field(False, description="a request to a stopped deployment starts it")
    wake_timeout: Duration = Field(60.0, description="how long such a request waits before a 503")


class LlamaCppDeployment(_Managed):
    """The embedded engine: llama-cpp-python serving a GGUF, one process per replica."""

    kind: Literal["llama-cpp"]
    model_path: Path | None = Field(None, description="GGUF file; default: the bundled SmolLM2-135M-Instruct")
    threads: int = Field(default_factory=_default_threads, ge=1, le=256)
    context_size: int = Field(2048, ge=128)
    replicas: int = Field(1, ge=1, le=64)
    max_queue: int = Field(32, ge=0, description="requests waiting for a free replica before 503")
    startup_timeout: Duration = 120.0
    health: Health = Health()
    load_metrics: LoadMetrics | None = None

    @property
    def max_concurrency(self) -> int:
        return 1  # one llama.cpp context decodes one sequence at a time

    @property
    def supports_embeddings(self) -> bool:
        return False


class RunsOn(_Section):
    """Where an external server's replicas run (one instance per URL): for `modelfleet cost` and `policy check`."""

    instance_type: str = Field(pattern=r"^[a-z0-9-]+\.[a-z0-9-]+$", description="EC2 type, e.g. g5.2xlarge")
    region: str = "us-east-1"
    tags: dict[str, str] = {}


class OpenAIDeployment(_Managed):
    """Any OpenAI-compatible server (vLLM, TGI, llama.cpp server, ...) reached by URL."""

    kind: Literal["openai"]
    urls: list[str] = Field(min_length=1, description="one base URL per replica, e.g. http://gpu-1:8000/v1")
    model: str | None = Field(None, description="the upstream's model name; default: the deployment name")
    api_key: Secret | None = Field(None, description="sent as a bearer token; use ${ENV_VAR} or aws-secret://NAME")
    max_concurrency: int | None = Field(None, ge=1, description="per replica; unset = unbounded")
    max_queue: int = Field(256, ge=0)
    health: Health = Health()
    load_metrics: LoadMetrics | None = Field(None, description="set to use vLLM's queue and KV-cache metrics")
    supports_embeddings: bool = True
    runs_on: RunsOn | None = Field(None, description="the EC2 instance type behind each URL, for cost and policy")

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"expected an http(s) base URL such as http://host:8000/v1, got {url!r}")
            if "@" in url.split("/", 3)[2]:  # never echo it: what is before the @ is a credential
                raise ValueError("a URL must not carry credentials (user:password@); give the key as api_key")
        return [u.rstrip("/") for u in urls]


class SageMakerCreate(_Section):
    """What `deployments start` needs to create the endpoint (and its model and config, once)."""

    image: str = Field(description="the container image URI, e.g. the HuggingFace TGI or DJL-LMI DLC")
    role_arn: str = Field(description="the execution role SageMaker assumes")
    instance_type: str = Field("ml.g5.2xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(1, ge=1, le=100)
    model_id: str | None = Field(None, description="HF_MODEL_ID for the container")
    hf_token: Secret | None = Field(None, description="HF_TOKEN: ${ENV_VAR} or aws-secret://NAME[#field]")
    env: dict[str, str] = {}
    tags: dict[str, str] = {}


class SageMakerDeployment(_Managed):
    """A SageMaker real-time endpoint running an LLM container (TGI, DJL-LMI, or one that takes messages)."""

    kind: Literal["sagemaker"]
    endpoint: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", description="the endpoint name")
    region: str = "us-east-1"
    container: Literal["tgi", "lmi", "messages"] = Field("tgi", description="the request/response schema it speaks")
    inference_component: str | None = None
    endpoint_url: str | None = Field(None, description="the AWS API base URL; for tests and private endpoints")
    runtime_url: str | None = Field(None, description="InvokeEndpoint's base URL, if not endpoint_url's")
    chat_template: Path | None = Field(None, description="tokenizer_config.json or a .jinja file (tgi, lmi)")
    create: SageMakerCreate | None = Field(None, description="unset: the endpoint is managed elsewhere")
    max_concurrency: int | None = Field(None, ge=1)
    max_queue: int = Field(256, ge=0)
    health: Health = Health(interval=30.0)
    load_metrics: None = None
    supports_embeddings: bool = False

    @model_validator(mode="after")
    def _template_for_prompt_containers(self) -> SageMakerDeployment:
        if self.container != "messages" and self.chat_template is None:
            raise ValueError(
                f"chat_template: the {self.container} container takes a prompt, so a chat needs the model's chat "
                "template: name its tokenizer_config.json or a .jinja file"
            )
        return self


from modelfleet.config.kubernetes import KubernetesDeployment  # noqa: E402  (it builds on the sections above)

Deployment = Annotated[
    LlamaCppDeployment | OpenAIDeployment | SageMakerDeployment | KubernetesDeployment, Field(discriminator="kind")
]


def _weights(value: Any) -> Any:
    # `deployments: [a, b]` is shorthand for equal weights.
    if isinstance(value, list):
        return dict.fromkeys(value, 1)
    if isinstance(value, str):
        return {value: 1}
    return value


def _fallbacks(value: Any) -> Any:
    # `fallbacks: none` is strict mode; YAML reads a bare `none` as a string, `null` as None.
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return "none"
    if isinstance(value, str):
        return [value]
    return value


_STICKY = re.compile(r"^(user|header:[A-Za-z0-9-]{1,64})$")


class Route(_Section):
    deployments: Annotated[dict[Name, Annotated[int, Field(ge=0)]], BeforeValidator(_weights)] = Field(
        min_length=1, description="deployment name -> weight"
    )
    timeout: Duration = Field(60.0, description="time to the first byte, and between streamed chunks")
    sticky: str | None = Field(None, description="user (the body's `user` field) or header:X-Session-ID")
    fallbacks: Annotated[list[Name] | Literal["none"], BeforeValidator(_fallbacks)] = Field(
        [], description="routes to try when this route's deployments are exhausted; none = strict, fail fast"
    )

    @field_validator("sticky")
    @classmethod
    def _sticky_form(cls, value: str | None) -> str | None:
        if value is not None and not _STICKY.match(value):
            raise ValueError(f"expected 'user' or 'header:NAME' (e.g. header:X-Session-ID), got {value!r}")
        return value

    @property
    def strict(self) -> bool:
        return self.fallbacks == "none"

    @field_validator("deployments")
    @classmethod
    def _some_weight(cls, weights: dict[str, int]) -> dict[str, int]:
        if not any(weights.values()):
            raise ValueError("at least one deployment needs a weight above 0")
        return weights


class Include(_Section):
    """Team fleet files merged into this (platform) fleet; see config/include.py."""

    files: list[str] = Field(min_length=1, description="files, globs or folders (teams.d/), relative to this file")
    team_settings: list[Literal["keys", "limits", "timeout", "tags"]] = Field(
        ["tags"], description="what a team file may set for its own team"
    )
    share: dict[Name, list[Name] | Literal["*"]] = Field(
        {}, description="route -> teams (or *) that may use it besides the team that owns it"
    )
    share_deployments: dict[Name, list[Name] | Literal["*"]] = Field(
        {}, description="platform deployment -> teams (or *) whose routes may send traffic to it"
    )
    env: dict[Name, list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]]] = Field(
        {}, description="team -> the environment variables its file may read as ${NAME}; none by default"
    )
    secrets: dict[Name, list[str]] = Field(
        {},
        description="team -> aws-secret:// names (and Kubernetes Secrets, hf_token_secret) its file may reference "
        "(fnmatch: teams/search/*); none by default",
    )
    aws_endpoints: list[str] = Field(
        [], description="URLs besides SageMaker's own a team file's endpoint_url/runtime_url may name"
    )


def _include(value: Any) -> Any:
    # `include: [teams.d/]` is shorthand for `include: {files: [teams.d/]}`.
    if isinstance(value, str):
        return {"files": [value]}
    return {"files": value} if isinstance(value, list) else value


class Observability(_Section):
    """Traces (OpenTelemetry, off unless an endpoint is set here or in OTEL_EXPORTER_OTLP_*), and what logs hold."""

    otlp_endpoint: str | None = Field(
        None, pattern=r"^https?://", description="OTLP/HTTP collector, e.g. http://otel-collector:4318"
    )
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of traces recorded, the clients' included")
    trust_client_sampling: bool = Field(
        False,
        description="record every request whose traceparent says sampled (only for trusted clients: a client "
        "could otherwise force the cost of tracing every request)",
    )
    service_name: str = "modelfleet"
    log_content: list[Name] = Field([], description="routes whose prompts and outputs go into the access log")
    redact: list[str] = Field(
        [r"[\w.+-]+@[\w-]+\.[\w.-]+", r"\b(?:\d[ -]?){13,16}\b", r"\b(?:sk|pk|api|key)[-_][A-Za-z0-9_-]{8,}"],
        description="regular expressions blanked out of logged prompts and outputs",
    )

    @field_validator("redact")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"redact: {p!r} is not a regular expression ({exc})") from None
        return patterns


class Fleet(_Section):
    """The whole fleet file."""

    include: Annotated[Include | None, BeforeValidator(_include)] = None
    policy: Policy = Policy()
    server: Server = Server()
    state: State = Field(default_factory=State)
    auth: Auth = Auth()
    teams: dict[Name, Team] = {}
    deployments: dict[Name, Deployment] = Field(min_length=1)
    routes: dict[Name, Route] = Field(min_length=1)
    observability: Observability = Observability()
    _owners: dict[str, Any] = PrivateAttr(default_factory=dict)  # which file declared what (config/include.py)
    deploy: Deploy | None = Field(None, description="where `modelfleet deploy aws` puts the fleet")

    @model_validator(mode="after")
    def _names_are_known(self) -> Fleet:
        for route_name, route in self.routes.items():
            for dep in route.deployments:
                if dep not in self.deployments:
                    known = ", ".join(sorted(self.deployments))
                    raise ValueError(f"routes.{route_name}.deployments: unknown deployment {dep!r}; defined: {known}")
            for fb in route.fallbacks if isinstance(route.fallbacks, list) else ():
                if fb not in self.routes or fb == route_name:
                    others = ", ".join(sorted(set(self.routes) - {route_name}))
                    raise ValueError(f"routes.{route_name}.fallbacks: {fb!r} is not another route; routes: {others}")
        for r in self.observability.log_content:
            if r not in self.routes:
                raise ValueError(
                    f"observability.log_content: unknown route {r!r}; defined: {', '.join(sorted(self.routes))}"
                )
        for team_name, team in self.teams.items():
            for r in team.routes if isinstance(team.routes, list) else ():
                if r not in self.routes:
                    known = ", ".join(sorted(self.routes))
                    raise ValueError(f"teams.{team_name}.routes: unknown route {r!r}; defined: {known}")
        self._fits_workers()
        seen: dict[str, str] = {}
        for team_name, team in self.teams.items():
            for key in team.keys:
                value = key.get_secret_value()
                if value in seen:
                    raise ValueError(f"teams.{team_name}.keys: the same key is also a key of team {seen[value]!r}")
                seen[value] = team_name
        return self

    @property
    def limits_unsupported(self) -> str | None:
        """Why teams made later (API, CLI) cannot have limits in this layout, or None when they can."""
        if self.server.workers > 1 and self.state.counters == "memory":
            return (f"limits need counters shared by the {self.server.workers} gateway processes "
                    "(server.workers): set state.counters: redis://host:6379/0 in the fleet file")  # fmt: skip
        return None

    def _fits_workers(self) -> None:
        """Refuse what several gateway processes cannot keep exact (each worker counts on its own)."""
        n = self.server.workers
        if n == 1:
            return
        for name, dep in self.deployments.items():
            if isinstance(dep, LlamaCppDeployment):
                raise ValueError(
                    f"server.workers: {n} gateway processes cannot share deployment {name!r}: a llama-cpp replica "
                    "decodes one request at a time, and separate processes cannot hold that slot exactly; use "
                    "workers: 1 (one gateway process serves thousands of requests a second)"
                )
            if dep.max_concurrency is not None:
                raise ValueError(
                    f"server.workers: {n} gateway processes would each allow deployments.{name}.max_concurrency "
                    f"({dep.max_concurrency}) per replica, {n}x in all; use workers: 1, or drop max_concurrency "
                    "and let the server queue"
                )
        limited = [t for t, team in self.teams.items() if team.limits != Limits()]
        if limited and self.state.counters == "memory":
            raise ValueError(
                f"server.workers: {n} gateway processes with state.counters: memory would each count team "
                f"{limited[0]!r}'s limits on their own, {n}x in all; set state.counters: redis://host:6379/0 "
                "to share them, or use workers: 1"
            )
