"""The load generator: streams chat completions from any OpenAI-compatible URL and times every chunk.

Two ways to offer load:
- closed loop: `concurrency` clients, each sending its next request when the last one ends;
- open loop: arrivals at `rate` per second with gamma-distributed gaps (shape = burstiness,
  scale = 1 / (rate * burstiness)): burstiness 1 is Poisson, a very large one is a constant rate;
  `concurrency` then caps requests in flight (the wait for a slot is not part of any latency).
Timestamps are taken when bytes arrive, before any JSON parsing. Requests that start in the
warm-up or after the cool-down mark are made but left out of the results.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modelfleet.api.sse import DONE, SSEDecoder
from modelfleet.backends import http1
from modelfleet.bench.metrics import RequestRecord, apply_timeline


@dataclass(frozen=True)
class LoadPlan:
    requests: int
    concurrency: int | None = None
    rate: float | None = None  # requests/s; None means closed loop
    burstiness: float = 1.0
    warmup: float = 0.0  # seconds excluded at the start
    cooldown: float = 0.0  # seconds excluded at the end
    timeout: float = 300.0
    seed: int = 0
    ignore_eos: bool = False  # ask for exactly max_tokens (vLLM's ignore_eos), for fixed output lengths

    def gaps(self) -> list[float]:
        if self.rate is None:
            return []
        rng = random.Random(self.seed)
        if self.burstiness >= 1e6:
            return [1.0 / self.rate] * self.requests
        scale = 1.0 / (self.rate * self.burstiness)
        return [rng.gammavariate(self.burstiness, scale) for _ in range(self.requests)]


@dataclass(frozen=True)
class Checks:
    regex: str | None = None
    json: bool = False
    reference: bool = False  # the prompt's `reference` must appear in the output (case-insensitive)
    schema: dict[str, Any] | None = None  # the output must be JSON valid against this JSON Schema

    def passed(self, text: str, reference: str | None = None) -> bool:
        if not text.strip():
            return False
        if self.reference and reference and reference.lower() not in text.lower():
            return False
        if self.regex and not re.search(self.regex, text):
            return False
        if self.json or self.schema is not None:
            try:
                doc = orjson.loads(text)
            except orjson.JSONDecodeError:
                return False
            if self.schema is not None:
                import jsonschema

                try:
                    jsonschema.validate(doc, self.schema)
                except jsonschema.ValidationError:
                    return False
        return True


async def run(
    url: str,
    model: str,
    prompts: list[dict[str, Any]],
    plan: LoadPlan,
    *,
    checks: Checks = Checks(),
    api_key: str | None = None,
    on_done: Callable[[RequestRecord], None] = lambda _: None,
) -> tuple[list[RequestRecord], float]:
    """Run the plan; return the records inside the measured window and that window's length in seconds."""
    headers = b"Content-Type: application/json\r\n"
    if api_key:
        headers += f"Authorization: Bearer {api_key}\r\n".encode()
    target = url.rstrip("/") + "/chat/completions"
    raw: list[tuple[RequestRecord, float, list[tuple[float, bytes]], dict[str, Any]]] = []
    # The gateway's own lean client: the load generator's cost per request shows up in TTFT, so it is kept
    # as small as the thing it measures (an unbounded pool: a cap would limit concurrency silently).
    session = http1.Client()
    try:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            prompt = prompts[i % len(prompts)]
            rec, start, chunks = await _request(
                session, target, headers, plan.timeout, model, prompt, f"{prompt.get('id', i)}#{i}", t0,
                plan.ignore_eos,
            )  # fmt: skip
            rec.prompt_id = prompt.get("id")
            rec.question = _question(prompt)
            raw.append((rec, start, chunks, prompt))
            on_done(rec)

        if plan.rate is None:
            counter = iter(range(plan.requests))

            async def client() -> None:
                for i in counter:
                    await one(i)

            await asyncio.gather(*(client() for _ in range(plan.concurrency or 1)))
        else:
            slots = asyncio.Semaphore(plan.concurrency) if plan.concurrency else None
            tasks = []
            next_at = time.perf_counter()
            for i, gap in enumerate(plan.gaps()):
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += gap
                tasks.append(asyncio.create_task(_bounded(slots, one, i)))
            await asyncio.gather(*tasks)
        total = time.perf_counter() - t0
    finally:
        await session.aclose()
    records = []
    for rec, start, chunks, prompt in raw:
        finish(rec, start, chunks, prompt, checks)
        records.append(rec)
    lo, hi = plan.warmup, total - plan.cooldown
    kept = [r for r in records if lo <= r.start <= hi]
    return sorted(kept, key=lambda r: r.start), max(hi - lo, 1e-9)


async def _bounded(slots: asyncio.Semaphore | None, fn: Callable[[int], Any], i: int) -> None:
    if slots is None:
        await fn(i)
        return
    async with slots:
        await fn(i)


async def _request(
    session: http1.Client,
    url: str,
    headers: bytes,
    timeout: float,
    model: str,
    prompt: dict[str, Any],
    rid: str,
    t0: float,
    ignore_eos: bool = False,
) -> tuple[RequestRecord, float, list[tuple[float, bytes]]]:
    """Send one request; keep the raw body chunks with their arrival times (decoded after the run)."""
    body = {
        "model": model,
        "messages": prompt["messages"],
        "max_tokens": prompt.get("max_tokens", 128),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    payload = orjson.dumps(body)
    chunks: list[tuple[float, bytes]] = []
    start = time.perf_counter()
    rec = RequestRecord(id=rid, start=start - t0)
    resp: http1.Response | None = None
    try:
        async with asyncio.timeout(timeout):  # the whole request, as the plan's timeout promises
            resp = await session.post(url, payload, headers, timeout, min(timeout, 10), stream=True)
            rec.status = resp.status
            rec.variant = resp.headers.get("x-modelfleet-deployment")
            if resp.status >= 400:
                rec.error = f"HTTP {resp.status}: {(await resp.read()).decode('utf-8', 'replace')[:200]}"
                return rec, start, chunks
            async for chunk in resp.chunks():
                chunks.append((time.perf_counter(), chunk))  # arrival time; parsing waits for the run's end
    except (ConnectionError, TimeoutError) as exc:
        rec.error = f"{type(exc).__name__}: {exc or f'no answer within {timeout:g}s'}"
    finally:
        if resp is not None:
            resp.release()
    return rec, start, chunks


def finish(
    rec: RequestRecord, start: float, chunks: list[tuple[float, bytes]], prompt: dict[str, Any], checks: Checks
) -> None:
    """Decode the stream: events in one read share that read's arrival time, as they arrived together."""
    decoder = SSEDecoder()
    events: list[tuple[float, dict[str, Any]]] = []
    try:
        for when, chunk in chunks:
            for data in decoder.feed(chunk):
                if data == DONE:
                    continue
                msg = orjson.loads(data)
                if "error" in msg:
                    err = msg["error"]
                    rec.error = f"stream error: {err.get('message', err) if isinstance(err, dict) else err}"
                    break
                events.append((when, msg))
    except orjson.JSONDecodeError as exc:
        rec.error = f"malformed event: {exc}"
    apply_timeline(rec, start, events)
    text = "".join(
        (c.get("delta") or {}).get("content") or c.get("text") or "" for _, m in events for c in m.get("choices") or ()
    )
    rec.output = text
    rec.passed = rec.ok and checks.passed(text, prompt.get("reference"))


def _question(prompt: dict[str, Any]) -> str:
    users = [m.get("content") for m in prompt.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else ""
