"""The embedded engine: one llama.cpp context behind a small OpenAI-compatible HTTP server.

It knows nothing of routes or teams; the gateway reaches it exactly as it reaches vLLM.
Generation runs on one worker thread (a llama.cpp context decodes one sequence at a time), and a
stopping-criteria hook lets a disconnected client stop its generation at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("modelfleet.engine")

# OpenAI parameter -> llama-cpp-python keyword, for the ones the engine honours.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repeat_penalty",
    "logit_bias": "logit_bias",
}
_CHAT_ONLY = {"response_format": "response_format", "logprobs": "logprobs", "top_logprobs": "top_logprobs"}
_UNSUPPORTED = {
    "tools": "tools are not supported by the llama-cpp engine",
    "tool_choice": "tool_choice is not supported by the llama-cpp engine",
    "functions": "functions are not supported by the llama-cpp engine",
    "guided_json": "guided decoding is not supported by the llama-cpp engine; use response_format",
    "guided_regex": "guided decoding is not supported by the llama-cpp engine",
    "guided_choice": "guided decoding is not supported by the llama-cpp engine",
    "guided_grammar": "guided decoding is not supported by the llama-cpp engine",
}


class _Cancelled:
    """A llama.cpp stopping criterion set when the client goes away; carries the prompt's token count."""

    def __init__(self) -> None:
        self.flag = threading.Event()
        self.prompt_tokens = 0

    def __call__(self, _input_ids: Any, _logits: Any) -> bool:
        return self.flag.is_set()


class Engine:
    def __init__(self, model_path: str, *, threads: int, context_size: int, name: str) -> None:
        from llama_cpp import Llama, StoppingCriteriaList
        from llama_cpp import llama_chat_format as chat_format

        self._chat_format = chat_format
        self._criteria_list = StoppingCriteriaList
        self.name = name
        self.llm = Llama(
            model_path=model_path,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=context_size,
            verbose=False,
        )
        # The chat template from the GGUF, applied here (not inside create_chat_completion) so that
        # our stopping criterion can cancel generation and the prompt's token count is exact.
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._format_chat: Callable[..., Any] = chat_format.format_chatml
        if template:
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self._format_chat = chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    def _kwargs(self, body: dict, chat: bool) -> dict[str, Any]:
        for param, why in _UNSUPPORTED.items():
            if body.get(param) is not None:
                raise _bad(why + ".", param)
        if (body.get("n") or 1) > 1:
            raise _bad("n>1 is not supported by the llama-cpp engine; send n=1 and repeat the request.", "n")
        kw = {_SAMPLING[k]: v for k, v in body.items() if k in _SAMPLING and v is not None}
        n_vocab = self.llm.n_vocab()
        for token in kw.get("logit_bias") or {}:  # llama.cpp would swallow the error on every token, and log it
            if not str(token).isdigit() or not 0 <= int(token) < n_vocab:
                raise _bad(f"logit_bias: {token!r} is not a token id of this model (0 to {n_vocab - 1}).", "logit_bias")
        if chat:
            kw.update({_CHAT_ONLY[k]: v for k, v in body.items() if k in _CHAT_ONLY and v is not None})
        elif body.get("logprobs") is not None:
            kw["logprobs"] = body["logprobs"]
        if body.get("ignore_eos"):  # vLLM's switch for fixed-length outputs, as benchmarks use it
            kw["logit_bias"] = {**(kw.get("logit_bias") or {}), str(self.llm.token_eos()): float("-inf")}
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        kw["max_tokens"] = max_tokens if max_tokens else None
        if not chat:
            kw["max_tokens"] = kw["max_tokens"] or 16  # OpenAI's default for completions
            if body.get("echo"):  # llama.cpp echoes only a prompt given as text, and the engine passes tokens
                raise _bad("echo is not supported by the llama-cpp engine.", "echo")
        return kw

    def generate(self, body: dict, chat: bool, stream: bool, cancel: _Cancelled) -> Any:
        kw = self._kwargs(body, chat)
        criteria = self._criteria_list([cancel])
        if not chat:
            prompt = body["prompt"]
            if isinstance(prompt, list):
                if len(prompt) != 1 or not isinstance(prompt[0], str):
                    raise _bad("the llama-cpp engine takes one prompt string per request.", "prompt")
                prompt = prompt[0]
            if not prompt:
                raise _bad("prompt is empty; the llama-cpp engine needs some text to continue.", "prompt")
            tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
            cancel.prompt_tokens = len(tokens)
            return self.llm.create_completion(prompt=tokens, stream=stream, stopping_criteria=criteria, **kw)

        formatted = self._format_chat(messages=[_text_only(m) for m in body["messages"]])
        tokens = self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
        cancel.prompt_tokens = len(tokens)
        if formatted.stop:
            stop = kw.get("stop") or []
            stop = [stop] if isinstance(stop, str) else list(stop)
            kw["stop"] = stop + ([formatted.stop] if isinstance(formatted.stop, str) else formatted.stop)
        if formatted.stopping_criteria:
            criteria.extend(formatted.stopping_criteria)
        if kw.pop("logprobs", None):
            kw["logprobs"] = kw.pop("top_logprobs", None) or 0
        kw.pop("top_logprobs", None)
        response_format = kw.pop("response_format", None)
        if response_format:
            kw["grammar"] = self._grammar(response_format)
        out = self.llm.create_completion(prompt=tokens, stream=stream, stopping_criteria=criteria, **kw)
        return self._chat_format._convert_completion_to_chat(out, stream=stream)

    def _grammar(self, response_format: dict) -> Any:
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_schema":  # OpenAI's structured outputs -> llama.cpp's JSON-schema grammar
            spec = response_format.get("json_schema") or {}
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise _bad("response_format.json_schema must be an object whose schema is an object.",
                           "response_format.json_schema")  # fmt: skip
            schema = spec.get("schema")
            response_format = {"type": "json_object", **({"schema": schema} if schema else {})}
        if response_format.get("type") != "json_object":
            raise _bad(f"response_format type {kind!r} is not supported", "response_format")
        return self._chat_format._grammar_for_response_format(response_format)  # type: ignore[arg-type]

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0


def _text_only(message: dict) -> dict:
    """OpenAI allows content as a list of parts; chat templates expect a string, so join the text parts."""
    if message.get("tool_calls") or message.get("function_call"):
        raise _bad("tool calls are not supported by the llama-cpp engine.", "messages")
    content = message.get("content")
    if not isinstance(content, list):
        return message
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise _bad(f"the llama-cpp engine takes text only; got a content part of type {kind!r}.", "messages")
        texts.append(str(part.get("text", "")))
    return {**message, "content": "".join(texts)}


def _bad(message: str, param: str | None = None) -> web.HTTPBadRequest:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return web.HTTPBadRequest(body=orjson.dumps(body), content_type="application/json")


def build_app(engine: Engine) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": engine.name}, dumps=_dumps)

    async def models(_: web.Request) -> web.Response:
        model = {"id": engine.name, "object": "model", "created": 0, "owned_by": "modelfleet"}
        return web.json_response({"object": "list", "data": [model]}, dumps=_dumps)

    async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise _bad(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _bad(f"the request body must be a JSON object, got {type(body).__name__}")
        stream = body.get("stream") is True
        cancel = _Cancelled()
        loop = asyncio.get_running_loop()
        if not stream:
            try:
                result = await loop.run_in_executor(engine.executor, _complete, engine, body, chat, cancel)
            except asyncio.CancelledError:
                cancel.flag.set()  # the client is gone: stop at the next token
                raise
            result["model"] = body.get("model") or engine.name
            return web.Response(body=orjson.dumps(result), content_type="application/json")
        return await _stream(request, engine, body, chat, cancel)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=True)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await generate(request, chat=False)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    return app


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _complete(engine: Engine, body: dict, chat: bool, cancel: _Cancelled) -> dict:
    try:
        return engine.generate(body, chat, stream=False, cancel=cancel)
    except web.HTTPException:
        raise
    except Exception as exc:
        raise _refused(exc) from None


def _refused(exc: BaseException) -> web.HTTPBadRequest:
    """Whatever llama.cpp could not take (a prompt longer than the context, a value of the wrong type, a
    message without content) is the request's problem: a 400 the caller can read, never a 5xx that
    would count against this replica's health."""
    log.warning("refused a request: %s: %s", type(exc).__name__, exc)
    return _bad(f"the llama-cpp engine cannot take this request: {type(exc).__name__}: {exc}")


async def _stream(
    request: web.Request, engine: Engine, body: dict, chat: bool, cancel: _Cancelled
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    model = body.get("model") or engine.name
    put = _threadsafe_put(loop, queue)

    def produce() -> None:
        try:
            chunks: Iterator[dict] = engine.generate(body, chat, stream=True, cancel=cancel)
            text: list[str] = []
            last: dict | None = None
            for chunk in chunks:
                chunk["model"] = model
                choice = chunk["choices"][0] if chunk.get("choices") else {}
                piece = choice.get("delta", {}).get("content") if chat else choice.get("text")
                if piece:
                    text.append(piece)
                put(b"data: " + orjson.dumps(chunk) + b"\n\n")
                last = chunk
                if cancel.flag.is_set():
                    chunks.close()  # type: ignore[attr-defined]
                    break
            if include_usage and last is not None:
                completion = engine.count_tokens("".join(text))
                usage = {
                    "prompt_tokens": cancel.prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": cancel.prompt_tokens + completion,
                }
                put(b"data: " + orjson.dumps({**last, "choices": [], "usage": usage}) + b"\n\n")
            put(b"data: [DONE]\n\n")
            put(None)
        except BaseException as exc:
            put(exc)

    response: web.StreamResponse | None = None
    future = loop.run_in_executor(engine.executor, produce)
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                if response is None:
                    if isinstance(item, web.HTTPException):
                        raise item
                    raise _refused(item) from None
                err = {"error": {"message": f"generation failed: {item}", "type": "server_error"}}
                await response.write(b"data: " + orjson.dumps(err) + b"\n\n")
                break
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
            await response.write(item)
        assert response is not None
        await response.write_eof()
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        cancel.flag.set()
        raise
    finally:
        cancel.flag.set()
        await asyncio.shield(future)


def _threadsafe_put(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Callable[[Any], None]:
    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    return put
