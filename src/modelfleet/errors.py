"""Every error modelfleet raises on purpose.

    ModelfleetError
    ├── ConfigError             a fleet file mistake: names the file, the field, the line, what is expected
    ├── EngineUnavailable       the embedded engine's packages are not installed
    └── APIError                answered to a client in the OpenAI error schema
        ├── InvalidRequest      400  malformed JSON, wrong types, unsupported parameters
        ├── Unauthorized        401  a missing, unknown or revoked API key
        ├── Forbidden           403  a route (or usage) outside the caller's team
        ├── ModelNotFound       404  `model` names no route
        ├── RateLimited         429  a team limit or budget is reached (with Retry-After, x-ratelimit-*)
        ├── RequestTimeout      408  the body did not arrive within `server.body_timeout`
        ├── BodyTooLarge        413  over `server.max_body_bytes`
        ├── Unavailable         503  no ready replica, or the queue is full (with Retry-After)
        ├── UpstreamRejected    4xx  the deployment refused the request itself (passed through)
        └── UpstreamError       502  the deployment answered 5xx, refused, or sent garbage
            ├── UpstreamTimeout 504  the deployment did not answer within the route's timeout
            └── UpstreamBusy    429  the deployment is busy (its 429/408), once no other replica can take it

No module here imports anything from modelfleet, so every layer can raise these.
"""

from __future__ import annotations

from typing import Any


class ModelfleetError(Exception):
    """Base of all modelfleet errors."""


class ConfigError(ModelfleetError):
    """A fleet file that cannot be used; the message is meant to be read by a person."""

    def __init__(self, problems: list[str], file: str | None = None) -> None:
        self.problems = problems
        self.file = file
        where = f"{file}: " if file else ""
        if len(problems) == 1:
            super().__init__(f"{where}{problems[0]}")
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            super().__init__(f"{where}{len(problems)} problems\n{lines}")


class EngineUnavailable(ModelfleetError):
    """The embedded llama.cpp engine cannot run on this installation."""


class APIError(ModelfleetError):
    """An error answered to the client as `{"error": {message, type, param, code}}`."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(APIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(APIError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class RateLimited(APIError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ModelNotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RequestTimeout(APIError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class BodyTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Unavailable(APIError):
    status = 503
    type = "service_unavailable"
    code = "deployment_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, round(retry_after)))})


class UpstreamRejected(APIError):
    """A 4xx from the deployment (context too long, unsupported parameter): the client's to fix."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message, param=param, code=code)
        self.status = status


class UpstreamError(APIError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamBusy(UpstreamError):
    """The deployment said 429 or 408: busy, not broken. Another replica is tried; if none can take it,
    the client gets the 429 and the deployment's own Retry-After."""

    status = 429
    type = "rate_limit_error"
    code = "upstream_busy"

    def __init__(self, message: str, retry_after: str | None = None) -> None:
        seconds = retry_after.strip() if retry_after else ""
        ok = seconds.isascii() and seconds.isdigit() and len(seconds) <= 6  # not '²', not 10^20 s
        super().__init__(message, headers={"Retry-After": seconds if ok else "1"})


def unreadable_body(exc: Exception) -> InvalidRequest:
    """A body aiohttp could not read (a Content-Encoding it is not in, broken chunking): the client's fault."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc  # aiohttp wraps the parser's own error
    detail = " ".join(str(getattr(cause, "message", "") or cause).split())[:200]
    return InvalidRequest(f"the request body could not be read: {detail}")
