"""SageMaker real-time endpoints: OpenAI bodies in, the container's schema over InvokeEndpoint, OpenAI out.

    send         -> InvokeEndpoint                    -> sagemaker_wire.from_container -> chat.completion JSON
    open_stream  -> InvokeEndpointWithResponseStream  -> PayloadParts -> StreamDecoder -> OpenAI SSE bytes

botocore is synchronous, so calls run on worker threads; a stream's event loop is bridged by a queue.
Credentials come from the standard boto3 chain. Every botocore error is translated here.
Prompt tokens: TGI reports them (`decoder_input_details`) on non-streaming calls; otherwise they are
estimated at four characters a token (the reply's tokens are always the container's own count).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

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
from modelfleet.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from modelfleet.values import Replica

_END = object()


def aws_client(service: str, region: str, endpoint_url: str | None, read_timeout: float = 60) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=read_timeout)
    return boto3.session.Session().client(service, region_name=region, endpoint_url=endpoint_url, config=config)


class SageMakerBackend:
    def __init__(self, dep: SageMakerDeployment) -> None:
        self.dep = dep
        self.template = ChatTemplate.load(dep.chat_template) if dep.chat_template else None
        self._client: Any = None

    def _runtime(self) -> Any:
        if self._client is None:
            url = self.dep.runtime_url or self.dep.endpoint_url
            self._client = aws_client("sagemaker-runtime", self.dep.region, url, read_timeout=3600)
        return self._client

    def _request(self, body: bytes, path: str, stream: bool) -> tuple[dict[str, Any], dict[str, Any], bool, int]:
        doc = orjson.loads(body)
        if path == "/embeddings":
            raise UpstreamRejected(400, f"deployment {self.dep.endpoint!r} (sagemaker) does not serve embeddings")
        chat = path == "/chat/completions"
        prompt: str | None = None
        if self.dep.container != "messages":
            if chat:
                assert self.template is not None  # the schema requires it for prompt containers
                prompt = self.template.render(doc["messages"])
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
            resp = await asyncio.wait_for(asyncio.to_thread(self._runtime().invoke_endpoint, **kwargs), timeout)
            payload = await asyncio.to_thread(resp["Body"].read)
        except TimeoutError:
            raise UpstreamTimeout(f"deployment {replica.deployment!r} (SageMaker endpoint {self.dep.endpoint}) did "
                                  f"not answer within the route timeout of {timeout:g}s") from None  # fmt: skip
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
        call = self._runtime().invoke_endpoint_with_response_stream
        try:
            resp = await asyncio.wait_for(asyncio.to_thread(call, **kwargs), timeout)
        except TimeoutError:
            raise UpstreamTimeout(f"deployment {replica.deployment!r} (SageMaker endpoint {self.dep.endpoint}) did "
                                  f"not start its stream within {timeout:g}s") from None  # fmt: skip
        except Exception as exc:
            raise _translate(replica, self.dep, exc) from None
        decoder = StreamDecoder(self.dep.container, model=doc["model"], chat=chat, prompt_tokens=estimate)
        return _SageMakerStream(resp["Body"], decoder, replica, timeout)

    async def aclose(self) -> None:
        self._client = None


class _SageMakerStream:
    """Reads the event stream on a thread; yields OpenAI SSE bytes on the loop."""

    def __init__(self, events: Any, decoder: StreamDecoder, replica: Replica, timeout: float) -> None:
        self._events = events
        self._decoder = decoder
        self._replica = replica
        self._timeout = timeout
        self._closed = threading.Event()

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        try:
            for part in payload_parts(self._events):
                if self._closed.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, part)
            loop.call_soon_threadsafe(queue.put_nowait, _END)
        except Exception as exc:  # ModelStreamError, InternalStreamFailure, a broken connection
            loop.call_soon_threadsafe(queue.put_nowait, exc)

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        loop.run_in_executor(None, self._pump, loop, queue)
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


def _translate(replica: Replica, dep: SageMakerDeployment, exc: BaseException) -> UpstreamError | UpstreamRejected:
    """botocore's errors as modelfleet's: the container's 4xx is the client's, the rest is the deployment's."""
    from botocore.exceptions import BotoCoreError, ClientError

    who = f"deployment {replica.deployment!r} (SageMaker endpoint {dep.endpoint})"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", ""), err.get("Message", str(exc))
        status = int(exc.response.get("OriginalStatusCode") or exc.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode", 500))  # fmt: skip
        if code == "ModelError" and 400 <= status < 500:
            return UpstreamRejected(status, f"{who} rejected the request: {message}")
        if code in ("ThrottlingException", "ServiceUnavailable", "ModelNotReadyException"):
            return UpstreamError(f"{who} is busy or not ready: {message}", code="upstream_busy")
        if code == "ValidationError" and "not found" in message.lower():
            return UpstreamError(f"{who} does not exist (is it stopped?): {message}", code="upstream_unreachable")
        return UpstreamError(f"{who} failed: {code}: {message}")
    if isinstance(exc, BotoCoreError):
        return UpstreamError(f"{who} could not be reached: {exc}", code="upstream_unreachable")
    return UpstreamError(f"{who} failed: {type(exc).__name__}: {exc}")
