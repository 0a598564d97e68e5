"""Request bodies of the admin API, as strict as the OpenAI ones (api/schema.py): "1000" is not 1000.

The fleet file keeps its own parsing (config/schema.py; YAML has no other way to say "30s"); a JSON
client says what it means, so a string where a number belongs, or a number where a string belongs, is
refused with the field's name rather than coerced. /openapi.json documents these same schemas.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Required

from pydantic import BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, WithJsonSchema, with_config
from typing_extensions import TypedDict

from modelfleet.api import schema
from modelfleet.config.schema import NAME_PATTERN
from modelfleet.errors import InvalidRequest

_FORBID = ConfigDict(extra="forbid")
Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]
Count = Annotated[StrictInt, Field(ge=1, le=2**53 - 1)]  # a JSON number every client reads back exactly
_DURATION = r"^\s*\d{1,9}(\.\d{1,9})?\s*(ms|s|m|h)?\s*$"


def _timeout(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return value
    if isinstance(value, str) and re.match(_DURATION, value):
        return value
    raise ValueError("expected seconds (a number above 0) or a duration such as 30s, 500ms, 5m or 1h")


# Seconds as a number, or the fleet file's spelling of a duration: 30s, 500ms, 5m, 1h.
Timeout = Annotated[
    float | str,
    BeforeValidator(_timeout),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": _DURATION}]}),
]


@with_config(_FORBID)
class TeamLimits(TypedDict, total=False):
    rpm: Count | None
    tpm: Count | None
    concurrency: Count | None
    tokens_per_day: Count | None
    tokens_per_month: Count | None


@with_config(_FORBID)
class TeamRequest(TypedDict, total=False):
    """POST /admin/teams: create or replace a team (keys are made with POST /admin/teams/{team}/keys)."""

    name: Required[Name]
    routes: list[Name] | Literal["*"]
    limits: TeamLimits
    timeout: Timeout | None
    tags: dict[StrictStr, StrictStr]


TEAM = TypeAdapter(TeamRequest)


def validate_team(body: dict[str, Any]) -> None:
    if "keys" in body:  # the one field people try: say where keys come from
        raise InvalidRequest("keys: create keys with POST /admin/teams/{team}/keys; they are shown once", param="keys")
    schema.validate(TEAM, body)
