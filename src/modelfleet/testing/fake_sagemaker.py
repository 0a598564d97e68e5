"""A fake SageMaker runtime over real HTTP: the InvokeEndpoint and InvokeEndpointWithResponseStream wire
formats, for what moto cannot do (response streams). Point a deployment's `endpoint_url` at it.

    python -m modelfleet.testing.fake_sagemaker --port 0 [--tokens 5] [--part-bytes 7] [--fail-after 3]

It answers as a TGI container: a JSON array, or SSE token events carried in PayloadPart event-stream
frames cut every `--part-bytes` bytes (mid-event, as SageMaker may). With --fail-after N the stream
ends with a ModelStreamError after N tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import json
import struct
from typing import Any

from aiohttp import web

READY_LINE = "FAKE_SAGEMAKER_READY"


def frame(payload: bytes, event_type: str = "PayloadPart", message_type: str = "event") -> bytes:
    """One application/vnd.amazon.eventstream message, built to the published format (prelude, CRCs)."""
    kind = ":exception-type" if message_type == "exception" else ":event-type"
    content = "application/json" if message_type == "exception" else "application/octet-stream"
    headers = b""
    for name, value in ((kind, event_type), (":content-type", content), (":message-type", message_type)):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", binascii.crc32(body))


def tgi_events(n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"index": i, "token": {"id": i, "text": f" tok{i}", "logprob": -0.1, "special": False},
         "generated_text": None, "details": None} for i in range(n)
    ]  # fmt: skip
    events[-1]["generated_text"] = "".join(e["token"]["text"] for e in events)
    events[-1]["details"] = {"finish_reason": "length", "generated_tokens": n, "seed": None}
    return events


def app(tokens: int, part_bytes: int, fail_after: int | None) -> web.Application:
    async def invoke(request: web.Request) -> web.Response:
        body = await request.json()
        n = min(tokens, body.get("parameters", {}).get("max_new_tokens") or tokens)
        last = tgi_events(n)[-1]
        return web.json_response([{"generated_text": last["generated_text"], "details": last["details"]}])

    async def invoke_stream(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = min(tokens, body.get("parameters", {}).get("max_new_tokens") or tokens)
        events = tgi_events(n)[: fail_after if fail_after is not None else n]
        sse = b"".join(b"data:" + json.dumps(e).encode() + b"\n\n" for e in events)
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream",
                                           "X-Amzn-Invoked-Production-Variant": "AllTraffic"})  # fmt: skip
        await resp.prepare(request)
        for i in range(0, len(sse), part_bytes):
            await resp.write(frame(sse[i : i + part_bytes]))
        if fail_after is not None:
            error = json.dumps({"Message": "CUDA out of memory", "ErrorCode": "ModelError"}).encode()
            await resp.write(frame(error, "ModelStreamError", "exception"))
        await resp.write_eof()
        return resp

    a = web.Application()
    a.router.add_post("/endpoints/{name}/invocations", invoke)
    a.router.add_post("/endpoints/{name}/invocations-response-stream", invoke_stream)
    return a


async def _serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(app(args.tokens, args.part_bytes, args.fail_after), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"{READY_LINE} port={port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m modelfleet.testing.fake_sagemaker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tokens", type=int, default=5)
    p.add_argument("--part-bytes", type=int, default=7, help="cut PayloadParts every N bytes")
    p.add_argument("--fail-after", type=int, default=None, help="end the stream with a ModelStreamError")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
