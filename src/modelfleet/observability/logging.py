"""Logs as text for people or JSON for machines, each line carrying the request id it belongs to."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time

import orjson

from modelfleet.observability import tracing

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.trace_id = tracing.current_trace_id()
        return True


# Credentials as they appear in raw header lines and messages: the value goes, the name stays.
_CREDENTIALS = re.compile(
    r"((?:authorization|proxy-authorization|api-key|x-api-key)\s*[:=]\s*(?:b'|\\x..|\s)*(?:bearer\s+|basic\s+)?)"
    r"[^\s'\",\\]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_OUR_KEYS = re.compile(r"mf-[0-9a-f]{8}-[A-Za-z0-9_-]+")  # the keys `modelfleet keys create` makes, wherever they are
_secrets: set[str] = set()  # the fleet file's own secret values (admin key, team keys, upstream keys)


def redact_values(values: set[str]) -> None:
    """Secret values that must never reach a log line, whichever logger writes it."""
    _secrets.update(v for v in values if len(v) >= 8)


def redact(text: str) -> str:
    text = _OUR_KEYS.sub("[redacted]", _BEARER.sub(r"\1[redacted]", _CREDENTIALS.sub(r"\1[redacted]", text)))
    for value in _secrets:
        if value in text:
            text = text.replace(value, "[redacted]")
    return text


class _RedactingFilter(logging.Filter):
    """Every record, the libraries' too: credentials are cut out, and aiohttp's complaints about a
    malformed request (a header too long, a bad request line) become one WARNING line with no
    traceback: a client's mistake is not the server's error, and the raw line may hold a key."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiohttp") and record.exc_info and _is_bad_request(record.exc_info[1]):
            exc = record.exc_info[1]
            # The class only: aiohttp's message quotes the raw header line (and so a key), over several lines.
            record.msg, record.args = "refused a malformed request: %s", (type(exc).__name__,)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        message = record.getMessage()
        clean = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _is_bad_request(exc: BaseException | None) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestPayloadError  # a body aiohttp could not decode, found as it drains it

    return isinstance(exc, HttpProcessingError | RequestPayloadError)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if trace_id := getattr(record, "trace_id", ""):
            doc["trace_id"] = trace_id
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)-5s %(name)s [%(request_id)s] %(message)s"


def configure(fmt: str = "text", level: int | str = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
