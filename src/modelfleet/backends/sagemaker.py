"""SageMaker real-time endpoints: OpenAI bodies in, the container's schema over InvokeEndpoint, OpenAI out.

    send         -> InvokeEndpoint                    -> sagemaker_wire.from_container -> chat.completion JSON
    open_stream  -> InvokeEndpointWithResponseStream  -> PayloadParts -> StreamDecoder -> OpenAI SSE bytes

botocore is synchronous, so calls run on this deployment's own threads (as many as its max_concurrency,
so a slow endpoint never starves the rest of the process), and the client is built there too (~100 ms).
Its read timeout is the longest route timeout that reaches the deployment, so a thread never outlives
its request by more than that. A stream is bridged to the event loop by a bounded queue: a client that
reads slowly slows the reading thread down instead of filling memory.
Credentials come from the standard boto3 chain. Every botocore error is translated here.
Prompt tokens: TGI reports them (`decoder_input_details`) on non-streaming calls; otherwise they are
estimated at four characters a token (the reply's tokens are always the container's own count).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from modelfleet.backends.chat_template import ChatTemplate
from modelfleet.backends.sagemaker_wire import (
    ContainerError,
    StreamDecoder,
    from_container,
    payload_parts,
    to_container,
)
from modelfleet.config.schema import SageMakerDeployment
from modelfleet.errors import APIError, UpstreamBusy, UpstreamError, UpstreamRejected, UpstreamTimeout
from modelfleet.observability.logging import redact
from modelfleet.values import Replica

_END = object()


class TemplateFailed(APIError):
    """The deployment's own chat template broke: a 502, but not the endpoint's fault, so no retry elsewhere
    (every replica has the same template) and no step toward ejecting it."""

    status = 502
    type = "upstream_error"
    code = "chat_template_error"


_QUEUE = 64  # PayloadParts buffered between the reading thread and the relay
_THREADS = 32  # when the deployment sets no max_concurrency
T = TypeVar("T")


def aws_client(service: str, region: str, endpoint_url: str | None, read_timeout: float = 60) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=read_timeout)
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint_url, config=config)


class SageMakerBackend:
    def __init__(self, dep: SageMakerDeployment, read_timeout: float = 60.0) -> None:
        self.dep = dep
        self.template = ChatTemplate.load(dep.chat_template) if dep.chat_template else None
        self.read_timeout = read_timeout
        self._client: Any = None
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(dep.max_concurrency or _THREADS, thread_name_prefix=f"sm-{dep.endpoint}")

    def _runtime(self) -> Any:
        """The runtime client; called on this backend's threads only."""
        with self._lock:
            if self._client is None:
                url = self.dep.runtime_url or self.dep.endpoint_url
                self._client = aws_client("sagemaker-runtime", self.dep.region, url, read_timeout=self.read_timeout)
            return self._client

    def _run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    def _invoke(self, kwargs: dict[str, Any]) -> bytes:
        return self._runtime().invoke_endpoint(**kwargs)["Body"].read()

    def _open(self, kwargs: dict[str, Any]) -> Any:
        return self._runtime().invoke_endpoint_with_response_stream(**kwargs)["Body"]

    def _render(self, messages: Any) -> str:
        """The chat as the container's prompt; a template that refuses these messages is the client's 400."""
        from jinja2 import TemplateError

        assert self.template is not None  # the schema requires it for prompt containers
        try:
            return self.template.render(messages)
        except TemplateError as exc:
            raise UpstreamRejected(400, f"deployment {self.dep.endpoint!r}: its chat template cannot render "
                                   f"these messages: {exc}", param="messages") from None  # fmt: skip
        except Exception as exc:
            raise TemplateFailed(f"deployment {self.dep.endpoint!r}: its chat template failed: "
                                f"{type(exc).__name__}: {exc}") from None  # fmt: skip

    def _request(self, body: bytes, path: str, stream: bool) -> tuple[dict[str, Any], dict[str, Any], bool, int]:
        doc = orjson.loads(body)
        if path == "/embeddings":
            raise UpstreamRejected(400, f"deployment {self.dep.endpoint!r} (sagemaker) does not serve embeddings")
        chat = path == "/chat/completions"
        prompt: str | None = None
        if self.dep.container != "messages":
            if chat:
                prompt = self._render(doc["messages"])
            else:
                prompt = doc.get("prompt") if isinstance(doc.get("prompt"), str) else None
                if prompt is None:
                    raise UpstreamRejected(
                        400, "prompt: a sagemaker deployment takes one prompt string", param="prompt"
                    )
        elif not chat:
            raise UpstreamRejected(400, "a `messages` container serves chat completions only; use /v1/chat/completions")
        container = to_container(doc, self.dep.container, prompt, stream=stream)
        if self.dep.container == "tgi" and not stream:
            container["parameters"]["decoder_input_details"] = True  # exact prompt tokens (not with streams)
        estimate = max(1, len(prompt or orjson.dumps(doc.get("messages", ""))) // 4)
        kwargs: dict[str, Any] = {
            "EndpointName": self.dep.endpoint, "ContentType": "application/json", "Accept": "application/json",
            "Body": orjson.dumps(container),
        }  # fmt: skip
        if self.dep.inference_component:
            kwargs["InferenceComponentName"] = self.dep.inference_component
        return kwargs, doc, chat, estimate

    async def send(self, replica: Replica, path: str, body: bytes, request_id: str, timeout: float) -> bytes:
        kwargs, doc, chat, estimate = self._request(body, path, stream=False)
        kwargs["CustomAttributes"] = f"request-id={request_id}"
        try:
            payload = await asyncio.wait_for(self._run(self._invoke, kwargs), timeout)
        except TimeoutError:
            who = f"deployment {replica.deployment!r} (SageMaker endpoint {self.dep.endpoint})"
            raise UpstreamTimeout(f"{who} did not answer within the {timeout:.3g}s left of the request's deadline"
                                  ) from None  # fmt: skip
        except Exception as exc:
            raise _translate(replica, self.dep, exc) from None
        try:
            reply = from_container(payload, self.dep.container, model=doc["model"], chat=chat, prompt_tokens=estimate)
        except (ContainerError, ValueError) as exc:
            raise UpstreamError(f"deployment {replica.deployment!r}: the container's reply: {exc}") from None
        return orjson.dumps(reply)

    async def open_stream(
        self, replica: Replica, path: str, body: bytes, request_id: str, timeout: float
    ) -> _SageMakerStream:
        kwargs, doc, chat, estimate = self._request(body, path, stream=True)
        kwargs["CustomAttributes"] = f"request-id={request_id}"
        try:
            events = await asyncio.wait_for(self._run(self._open, kwargs), timeout)
        except TimeoutError:
            raise UpstreamTimeout(f"deployment {replica.deployment!r} (SageMaker endpoint {self.dep.endpoint}) did "
                                  f"not start its stream within {timeout:g}s") from None  # fmt: skip
        except Exception as exc:
            raise _translate(replica, self.dep, exc) from None
        decoder = StreamDecoder(self.dep.container, model=doc["model"], chat=chat, prompt_tokens=estimate)
        return _SageMakerStream(events, decoder, replica, timeout, self._threads)

    async def aclose(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._client = None


class _SageMakerStream:
    """Reads the event stream on a thread; yields OpenAI SSE bytes on the loop."""

    def __init__(
        self, events: Any, decoder: StreamDecoder, replica: Replica, timeout: float, threads: ThreadPoolExecutor
    ) -> None:
        self._events = events
        self._decoder = decoder
        self._replica = replica
        self._timeout = timeout
        self._threads = threads
        self._closed = threading.Event()
        self._queue: asyncio.Queue[Any] | None = None

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        def put(item: Any) -> None:  # waits while the queue is full: the relay sets the pace
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        try:
            for part in payload_parts(self._events):
                if self._closed.is_set():
                    return
                put(part)
            put(_END)
        except Exception as exc:  # ModelStreamError, InternalStreamFailure, a broken connection
            if not self._closed.is_set():
                with contextlib.suppress(Exception):
                    put(exc)

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE)
        self._queue = queue
        loop.run_in_executor(self._threads, self._pump, loop, queue)
        who = f"deployment {self._replica.deployment!r} (SageMaker)"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), self._timeout)
            except TimeoutError:
                raise UpstreamTimeout(f"{who} sent nothing for {self._timeout:g}s mid-stream") from None
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise UpstreamError(f"{who} failed mid-stream: {item}", code="upstream_stream_error")
            try:
                events = self._decoder.feed(item)
            except (ContainerError, ValueError) as exc:
                raise UpstreamError(f"{who} failed mid-stream: {exc}", code="upstream_stream_error") from None
            if events:
                yield b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
        if not self._decoder.done:
            raise UpstreamError(f"{who} ended its stream before the last token", code="upstream_stream_error")
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(Exception):
            self._events.close()
        while self._queue is not None and not self._queue.empty():  # a reader blocked on a full queue moves on
            self._queue.get_nowait()


def _translate(replica: Replica, dep: SageMakerDeployment, exc: BaseException) -> UpstreamError | UpstreamRejected:
    """botocore's errors as modelfleet's: the container's 4xx is the client's, the rest is the deployment's."""
    from botocore.exceptions import BotoCoreError, ClientError

    who = f"deployment {replica.deployment!r} (SageMaker endpoint {dep.endpoint})"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", ""), redact(err.get("Message", str(exc)))
        status = int(exc.response.get("OriginalStatusCode") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", 500))  # fmt: skip
        if code == "ModelError" and 400 <= status < 500:
            return UpstreamRejected(status, f"{who} rejected the request: {message}")
        if code == "ThrottlingException":
            return UpstreamBusy(f"{who} is busy: {message}")
        if code in ("ServiceUnavailable", "ModelNotReadyException"):
            return UpstreamError(f"{who} is not ready: {message}", code="upstream_busy")
        if code == "ValidationError" and "not found" in message.lower():
            return UpstreamError(f"{who} does not exist (is it stopped?): {message}", code="upstream_unreachable")
        return UpstreamError(f"{who} failed: {code}: {message}")
    if isinstance(exc, BotoCoreError):
        return UpstreamError(f"{who} could not be reached: {exc}", code="upstream_unreachable")
    return UpstreamError(f"{who} failed: {type(exc).__name__}: {exc}")
