"""Request bodies of the OpenAI endpoints, validated before anything leaves the gateway.

Known parameters are typed and range-checked; a parameter nobody knows is refused (like OpenAI does),
except the extras vLLM and TGI accept, which pass through to upstreams that understand them.
The validated body is forwarded as the client sent it: these schemas only judge, they never rewrite.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Required

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

from modelfleet.errors import InvalidRequest

# Numbers as OpenAI takes them: a JSON number (an integer will do), never "0.7" or true.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Probability = Annotated[Number, Field(ge=0, le=1)]
Penalty = Annotated[Number, Field(ge=-2, le=2)]
PositiveInt = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]  # what servers (and the usage ledger) can count
TokenId = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None

# TypedDicts, not models: validation is ~3x cheaper when no instance (with ~40 defaults) is built.
_FORBID = ConfigDict(extra="forbid")


@with_config(ConfigDict(extra="allow"))  # image_url, input_audio, file, ...
class ContentPart(TypedDict, total=False):
    type: Required[StrictStr]
    text: StrictStr


Content = StrictStr | Annotated[list[ContentPart], Field(min_length=1)]


@with_config(ConfigDict(extra="allow"))  # name, tool_call_id, audio, ...
class UserMessage(TypedDict, total=False):
    role: Required[Literal["system", "developer", "user", "tool", "function"]]
    content: Required[Content]


@with_config(ConfigDict(extra="allow"))  # name, tool_calls, refusal, audio, ...
class AssistantMessage(TypedDict, total=False):
    role: Required[Literal["assistant"]]
    content: Content | None  # null when the message carries tool_calls


def _message_kind(message: Any) -> str:
    return "assistant" if isinstance(message, dict) and message.get("role") == "assistant" else "other"


Message = Annotated[
    Annotated[AssistantMessage, Tag("assistant")] | Annotated[UserMessage, Tag("other")],
    Discriminator(_message_kind),
]


@with_config(_FORBID)
class StreamOptions(TypedDict, total=False):
    include_usage: StrictBool
    continuous_usage_stats: StrictBool | None  # vLLM


class _Sampling(TypedDict, total=False):
    model: Required[StrictStr]
    max_tokens: PositiveInt | None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None
    top_p: Probability | None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None
    stop: Stop
    seed: StrictInt | None
    stream: StrictBool | None
    stream_options: StreamOptions | None
    presence_penalty: Penalty | None
    frequency_penalty: Penalty | None
    logit_bias: dict[TokenId, Annotated[Number, Field(ge=-100, le=100)]] | None
    user: StrictStr | None
    # Accepted by vLLM / TGI / llama.cpp servers; passed through untouched.
    top_k: StrictInt | None
    min_p: Probability | None
    repetition_penalty: Annotated[Number, Field(gt=0)] | None
    min_tokens: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None
    ignore_eos: StrictBool | None
    stop_token_ids: list[StrictInt] | None
    skip_special_tokens: StrictBool | None
    guided_json: Any
    guided_regex: StrictStr | None
    guided_choice: list[StrictStr] | None
    guided_grammar: StrictStr | None
    structured_outputs: dict[str, Any] | None
    priority: StrictInt | None


@with_config(_FORBID)
class ChatRequest(_Sampling, total=False):
    messages: Required[Annotated[list[Message], Field(min_length=1)]]
    max_completion_tokens: PositiveInt | None
    tools: list[dict[str, Any]] | None
    tool_choice: StrictStr | dict[str, Any] | None
    parallel_tool_calls: StrictBool | None
    response_format: dict[str, Any] | None
    logprobs: StrictBool | None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None
    metadata: dict[str, str] | None
    store: StrictBool | None
    reasoning_effort: StrictStr | None
    service_tier: StrictStr | None
    chat_template_kwargs: dict[str, Any] | None


@with_config(_FORBID)
class CompletionRequest(_Sampling, total=False):
    prompt: Required[StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]]
    echo: StrictBool | None
    best_of: Annotated[StrictInt, Field(ge=1, le=20)] | None  # OpenAI's bound; each one is generated
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None
    suffix: StrictStr | None


@with_config(_FORBID)
class EmbeddingRequest(TypedDict, total=False):
    model: Required[StrictStr]
    input: Required[StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]]
    encoding_format: Literal["float", "base64"] | None
    dimensions: PositiveInt | None
    user: StrictStr | None


CHAT = TypeAdapter(ChatRequest)
COMPLETION = TypeAdapter(CompletionRequest)
EMBEDDING = TypeAdapter(EmbeddingRequest)


def validate(schema: TypeAdapter[Any], body: Any) -> None:
    """Raise InvalidRequest naming the first bad parameter; return quietly when the body is fine."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        schema.validate_python(body)
    except ValidationError as exc:
        raise _as_invalid_request(exc) from None


def param_name(loc: tuple[Any, ...]) -> str | None:
    """A pydantic location as a person writes it: messages[0].content, not messages.0.other.content.str."""
    out = ""
    for i, part in enumerate(loc):
        if part == "[key]" or (i + 1 < len(loc) and loc[i + 1] == "[key]"):
            continue  # a bad key of a map (logit_bias): the map is the parameter, the key is in the message
        if isinstance(part, int):
            out += f"[{part}]"
        elif _TYPE_NAME.match(str(part)) or (part in _MESSAGE_TAGS and i and isinstance(loc[i - 1], int)):
            continue  # a union member pydantic names in the path, not a field
        else:
            out += f".{part}" if out else str(part)
    return _clip(out) or None


def _clip(text: str, most: int = 100) -> str:
    """What an error echoes of the client's input: enough to recognise it, never the whole of a huge value."""
    return text if len(text) <= most else text[:most] + "..."


_TYPE_NAME = re.compile(r"^(str|int|float|bool|none|(list|dict|tuple|literal)\[.*\]|function-.*|constrained-.*)$")
_MESSAGE_TAGS = {"assistant", "other"}


def _as_invalid_request(exc: ValidationError) -> InvalidRequest:
    # Of the errors a union gives, the one that went deepest into the body says best what is wrong.
    errors = exc.errors()
    err = max(errors, key=lambda e: len(param_name(tuple(e["loc"])) or ""))
    loc = err["loc"]
    param = param_name(loc)
    top = _clip(str(loc[0])) if loc else None
    if err["type"] == "extra_forbidden" and len(loc) == 1:
        return InvalidRequest(f"Unrecognized request argument supplied: {top}", param=top)
    if err["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'", param=param)
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {_clip(repr(got))})"
    return InvalidRequest(f"Invalid value for '{param}': {err['msg'].lower()}{shown}", param=param)
