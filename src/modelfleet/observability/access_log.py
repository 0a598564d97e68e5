"""One line per request, buffered and written in batches.

stdlib logging costs ~35 us a line (record, filter, formatter, a write per line): more than the rest
of the gateway's own work. Like nginx's `access_log ... buffer=`, lines are built cheaply here and
flushed every `interval` seconds (and on shutdown) in one write.

A line says who (team), what (route, the variant picked, the deployment and replica that answered),
how (status, latency, time to first token, tokens, attempts) and where to look further (request and
trace id). Prompts and answers are never written, unless a route is listed in
`observability.log_content`; then with every match of the `observability.redact` patterns blanked.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from typing import TextIO

import orjson

from modelfleet.background import Periodic
from modelfleet.values import Usage

REDACTED = "[redacted]"


class AccessLog:
    def __init__(
        self,
        fmt: str = "text",
        stream: TextIO | None = None,
        interval: float = 0.1,
        *,
        content_routes: tuple[str, ...] | list[str] = (),
        redact: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.json = fmt == "json"
        self.content_routes = frozenset(content_routes)
        self._redact = re.compile("|".join(f"(?:{p})" for p in redact)) if redact else None
        self.stream = stream or sys.stderr
        self.interval = interval
        self._lines: list[str] = []
        self._sec = -1
        self._stamp = ""
        self._loop = Periodic("access log", self.interval, self._flush)

    def _now(self) -> str:
        now = time.time()
        sec = int(now)
        if sec != self._sec:
            self._sec = sec
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._stamp}.{int((now - sec) * 1000):03d}Z"

    def record(
        self,
        rid: str,
        method: str,
        path: str,
        status: int,
        ms: float,
        route: str,
        deployment: str,
        replica: str,
        *,
        team: str = "-",
        variant: str = "",
        ttft: float | None = None,
        usage: Usage | None = None,
        attempts: int = 0,
        trace_id: str = "",
        content: tuple[dict | None, list[bytes | str]] | None = None,
    ) -> None:
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else (0, 0)
        if self.json:
            doc = {
                "ts": self._now(), "level": "info", "logger": "modelfleet.access", "request_id": rid,
                "method": method, "path": path, "status": status, "duration_ms": round(ms, 3),
                "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
                "team": team, "route": route, "variant": variant, "deployment": deployment, "replica": replica,
                "prompt_tokens": prompt, "completion_tokens": completion, "attempts": attempts,
                "trace_id": trace_id,
            }  # fmt: skip
            if content is not None:
                doc["prompt"], doc["output"] = self._content(*content)
            self._lines.append(orjson.dumps(doc).decode())
        else:
            if not path.isprintable():  # a %0A or %00 in a URL must not split or corrupt a log line
                path = path.encode("unicode_escape").decode("ascii")
            line = (
                f"{self._now()} INFO  modelfleet.access [{rid}] {method} {path} {status} {ms:.1f}ms "
                f"route={route or '-'} deployment={deployment or '-'} replica={replica or '-'} "
                f"team={team} variant={variant or '-'} tokens={prompt}+{completion} attempts={attempts}"
            )
            if ttft is not None:
                line += f" ttft={ttft * 1000:.1f}ms"
            if trace_id:
                line += f" trace_id={trace_id}"
            if content is not None:
                p, o = self._content(*content)
                line += f" prompt={orjson.dumps(p).decode()} output={orjson.dumps(o).decode()}"
            self._lines.append(line)

    def _content(self, body: dict | None, output: list[bytes | str]) -> tuple[str, str]:
        """A logged route's prompt and answer, as text, with every pattern match blanked."""
        asked = (body or {}).get("messages", (body or {}).get("prompt", (body or {}).get("input", "")))
        prompt = asked if isinstance(asked, str) else orjson.dumps(asked).decode()
        answer = "".join(_text(o) for o in output)
        if self._redact is not None:
            prompt, answer = self._redact.sub(REDACTED, prompt), self._redact.sub(REDACTED, answer)
        return prompt, answer

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    async def _flush(self) -> None:
        self.flush()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        self.flush()


def _text(raw: bytes | str) -> str:
    """The generated text in a reply or a stream event (JSON); "" when there is none."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    out = []
    for choice in doc.get("choices") or () if isinstance(doc, dict) else ():
        if not isinstance(choice, dict):
            continue
        part = choice.get("delta") or choice.get("message") or {}
        text = part.get("content") if isinstance(part, dict) else None
        text = text if isinstance(text, str) else choice.get("text")
        if isinstance(text, str):
            out.append(text)
    return "".join(out)
