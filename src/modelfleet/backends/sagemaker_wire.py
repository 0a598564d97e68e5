"""SageMaker LLM containers' wire formats, translated to and from OpenAI's. Pure functions, no I/O.

Three container schemas (see shared notes, wire-formats.md):
- `tgi` (HuggingFace LLM DLC): {"inputs", "parameters", "stream"}; replies are a JSON *array*
  [{"generated_text", "details"}]; streams are SSE `data:{"token": {...}}`, the last event carrying
  `generated_text` and `details`.
- `lmi` (DJL-LMI, vLLM rolling batch): the same request with `stop_sequences` for `stop`; replies are a
  JSON *object*; streams are JSON lines `{"token": {"id", "text", "log_prob"}}`, the last adding
  `generated_text` and `details`; errors mid-stream arrive as finish_reason "error".
- `messages`: the container takes an OpenAI chat body and answers chat.completion(.chunk)s, as SSE
  (`data:` lines) or as bare JSON lines.
Stream bytes arrive in PayloadParts cut at arbitrary points, so decoders buffer until a newline.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import orjson

Schema = Literal["tgi", "lmi", "messages"]

_FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop", "stop": "stop"}


class ContainerError(Exception):
    """The container reported a failure inside an otherwise successful response."""


def to_container(body: dict[str, Any], schema: Schema, prompt: str | None, *, stream: bool) -> dict[str, Any]:
    """An OpenAI chat/completions body as the container wants it; `prompt` is the rendered chat template."""
    if schema == "messages":
        out = {k: v for k, v in body.items() if k not in ("model", "stream_options")}
        out["stream"] = stream
        return out
    params: dict[str, Any] = {"details": True}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        params["max_new_tokens"] = max_tokens
    temperature = body.get("temperature")
    if temperature is not None:
        if temperature > 0:
            params.update(do_sample=True, temperature=temperature)
        else:
            params["do_sample"] = False  # TGI refuses temperature 0; greedy is its way to say it
    for key in ("top_p", "top_k", "seed", "repetition_penalty"):
        if body.get(key) is not None:
            params[key] = body[key]
    stop = body.get("stop")
    if stop:
        params["stop" if schema == "tgi" else "stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if schema == "lmi":
        for key in ("presence_penalty", "frequency_penalty", "min_p"):
            if body.get(key) is not None:
                params[key] = body[key]
    return {"inputs": prompt if prompt is not None else "", "parameters": params, "stream": stream}


def from_container(payload: bytes, schema: Schema, *, model: str, chat: bool, prompt_tokens: int) -> dict[str, Any]:
    """A non-streaming container reply as an OpenAI chat.completion or text_completion."""
    doc = orjson.loads(payload)
    if schema == "messages":
        doc["model"] = model
        return doc
    if isinstance(doc, list):  # TGI answers an array
        doc = doc[0] if doc else {}
    if not isinstance(doc, dict) or "generated_text" not in doc:
        raise ContainerError(f"unexpected {schema} reply: {payload[:200]!r}")
    details = doc.get("details") or {}
    if details.get("finish_reason") == "error":
        raise ContainerError(str(doc.get("error") or "the container reported an error"))
    text = doc["generated_text"]
    completion_tokens = int(details.get("generated_tokens") or 0)
    prompt_tokens = len(details.get("prefill") or ()) or prompt_tokens  # TGI's count, when it was asked for
    finish = _FINISH.get(details.get("finish_reason", ""), "stop")
    usage = _usage(prompt_tokens, completion_tokens)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        return _envelope("chat.completion", model, [choice], usage)
    return _envelope("text_completion", model, [{"index": 0, "text": text, "finish_reason": finish}], usage)


class StreamDecoder:
    """Container stream bytes in, OpenAI chunks out (the final one carries usage)."""

    def __init__(self, schema: Schema, *, model: str, chat: bool, prompt_tokens: int) -> None:
        self.schema = schema
        self.model = model
        self.chat = chat
        self.prompt_tokens = prompt_tokens
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}" if chat else f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self._buf = b""
        self._tokens = 0
        self._started = False
        self.done = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        out: list[dict[str, Any]] = []
        for raw in lines:
            line = raw.strip()
            if line.startswith(b"data:"):
                line = line[5:].strip()
            if not line or line.startswith(b":") or line == b"[DONE]":
                if line == b"[DONE]":
                    self.done = True
                continue
            out.extend(self._event(orjson.loads(line)))
        return out

    def _event(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        if self.schema == "messages":
            if "error" in doc:
                raise ContainerError(str(doc["error"]))
            doc["model"] = self.model
            if not doc.get("choices") and doc.get("usage"):
                self.done = True
            return [doc]
        if doc.get("error"):
            raise ContainerError(str(doc["error"]))
        out = []
        if self.chat and not self._started:
            out.append(self._chunk({"role": "assistant", "content": ""}, None))
        self._started = True
        token = doc.get("token") or {}
        details = doc.get("details")
        if token and not token.get("special"):
            self._tokens += 1
            out.append(self._chunk({"content": token.get("text", "")}, None))
        elif token:
            self._tokens += 1  # a special token (e.g. EOS) is generated but not shown
        if details is not None or doc.get("generated_text") is not None:
            details = details or {}
            if details.get("finish_reason") == "error":
                raise ContainerError(str(doc.get("error") or "the container failed mid-stream"))
            finish = _FINISH.get(details.get("finish_reason", ""), "stop")
            completion = int(details.get("generated_tokens") or self._tokens)
            out.append(self._chunk({}, finish))
            out.append({**self._head(), "choices": [], "usage": _usage(self.prompt_tokens, completion)})
            self.done = True
        return out

    def _head(self) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta.get("content", ""), "finish_reason": finish}
        return {**self._head(), "choices": [choice]}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _envelope(kind: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
    prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
        "model": model, "choices": choices, "usage": usage,
    }  # fmt: skip


def payload_parts(events: Any) -> Any:
    """Bytes of each PayloadPart from InvokeEndpointWithResponseStream's event stream (as boto3 yields it).

    ModelStreamError and InternalStreamFailure end the stream with a ContainerError, which the gateway
    turns into a terminal error event.
    """
    for event in events:
        if "PayloadPart" in event:
            yield event["PayloadPart"].get("Bytes", b"")
        elif "ModelStreamError" in event:
            err = event["ModelStreamError"]
            raise ContainerError(f"ModelStreamError {err.get('ErrorCode', '')}: {err.get('Message', '')}".strip())
        elif "InternalStreamFailure" in event:
            raise ContainerError(f"InternalStreamFailure: {event['InternalStreamFailure'].get('Message', '')}")
