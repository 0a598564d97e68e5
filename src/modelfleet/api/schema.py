"""Request bodies of the OpenAI endpoints, validated before anything leaves the gateway.

Known parameters are typed and range-checked; a parameter nobody knows is refused (like OpenAI does),
except the extras vLLM and TGI accept, which pass through to upstreams that understand them.
The validated body is forwarded as the client sent it: these models only judge, they never rewrite.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from modelfleet.errors import InvalidRequest

Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id, audio, ...

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[dict[str, Any]] | None = None


class StreamOptions(_Body):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool | None = None  # vLLM


class _Sampling(_Body):
    model: StrictStr
    max_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    n: PositiveInt | None = None
    stop: Stop = None
    seed: StrictInt | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    user: StrictStr | None = None
    # Accepted by vLLM / TGI / llama.cpp servers; passed through untouched.
    top_k: StrictInt | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None
    min_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    ignore_eos: StrictBool | None = None
    stop_token_ids: list[StrictInt] | None = None
    skip_special_tokens: StrictBool | None = None
    guided_json: Any = None
    guided_regex: StrictStr | None = None
    guided_choice: list[StrictStr] | None = None
    guided_grammar: StrictStr | None = None
    structured_outputs: dict[str, Any] | None = None
    priority: StrictInt | None = None


class ChatRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    metadata: dict[str, str] | None = None
    store: StrictBool | None = None
    reasoning_effort: StrictStr | None = None
    service_tier: StrictStr | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    echo: StrictBool | None = None
    best_of: PositiveInt | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None = None
    suffix: StrictStr | None = None


class EmbeddingRequest(_Body):
    model: StrictStr
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None
    user: StrictStr | None = None


def validate(schema: type[BaseModel], body: Any) -> None:
    """Raise InvalidRequest naming the first bad parameter; return quietly when the body is fine."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        raise _as_invalid_request(exc) from None


def _as_invalid_request(exc: ValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = err["loc"]
    param = ".".join(str(p) for p in loc) or None
    top = str(loc[0]) if loc else None
    if err["type"] == "extra_forbidden" and len(loc) == 1:
        return InvalidRequest(f"Unrecognized request argument supplied: {top}", param=top)
    if err["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'", param=param)
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
    return InvalidRequest(f"Invalid value for '{param}': {err['msg'].lower()}{shown}", param=param)
