"""End to end: `modelfleet serve` with no fleet file, the real SmolLM2 on llama.cpp, the openai SDK."""

from __future__ import annotations

import os
import signal
import time

import httpx
import openai
import pytest
from conftest import Gateway

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gw():
    g = Gateway(None)  # the built-in fleet: two commands, nothing else
    yield g
    assert g.stop() == 0
    assert "stopped" in g.output


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0, timeout=120)


def test_models(client):
    assert [m.id for m in client.models.list()] == ["smollm2"]


def test_chat(client):
    reply = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=12, temperature=0)
    assert reply.model == "smollm2" and reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 12
    again = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=12, temperature=0)
    assert again.choices[0].message.content == reply.choices[0].message.content  # greedy is deterministic


def test_chat_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=HELLO,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 12
    whole = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=12, temperature=0)
    assert text == whole.choices[0].message.content  # streaming and not give the same greedy answer
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions(client):
    done = client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert done.model == "smollm2" and done.choices[0].text
    assert done.usage.prompt_tokens == 4 and done.usage.completion_tokens <= 8


def test_json_response_format(client):
    import json

    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Give a JSON object with a key name."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    if reply.choices[0].finish_reason == "stop":
        json.loads(reply.choices[0].message.content)


@pytest.mark.parametrize(
    ("extra", "param", "needle"),
    [
        ({"n": 2}, "n", "n>1 is not supported by the llama-cpp engine"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", "tools are not"),
    ],
)
def test_unsupported_parameters_are_clear_400s(client, extra, param, needle):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=2, **extra)
    assert needle in info.value.message and info.value.param == param


def test_embeddings_are_refused_for_llama_cpp(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="smollm2", input="x")
    assert "does not serve embeddings" in info.value.message


def test_client_disconnect_stops_generation(gw, client):
    # Ask for far more tokens than we read; if generation went on, the next request would queue
    # behind ~2,000 tokens (a minute at this engine's speed) instead of answering in a second or two.
    with httpx.stream(
        "POST",
        gw.url + "/chat/completions",
        json={"model": "smollm2", "messages": HELLO, "max_tokens": 2000, "stream": True, "temperature": 1.5},
        timeout=60,
    ) as resp:
        lines = resp.iter_lines()
        for _ in range(3):
            next(lines)
    started = time.monotonic()
    reply = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=4)
    assert reply.choices[0].message.content is not None
    assert time.monotonic() - started < 15


def test_a_killed_engine_is_restarted(gw, client):
    pid = int(gw.wait_for(r"replica smollm2-0 ready at \S+ \(pid (\d+)\)").group(1))
    mark = len(gw.lines)
    os.kill(pid, signal.SIGKILL)
    gw.wait_for(r"replica smollm2-0 engine exited with code -9; restarting", 10, start=mark)
    # Requests sent while it restarts wait for it instead of failing.
    reply = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=4)
    assert reply.choices[0].message.content is not None
    new_pid = int(gw.wait_for(r"replica smollm2-0 ready at \S+ \(pid (\d+)\)", 30, start=mark).group(1))
    assert new_pid != pid


def test_content_parts_are_joined_and_images_refused(client):
    parts = [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}]
    as_parts = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": parts}], max_tokens=8, temperature=0
    )
    as_text = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=8, temperature=0)
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": image}], max_tokens=2)
    assert "takes text only" in info.value.message and "'image_url'" in info.value.message


def test_ignore_eos_gives_exactly_max_tokens(client):
    question = [{"role": "user", "content": "What is 2+2? Answer with a number only."}]
    short = client.chat.completions.create(model="smollm2", messages=question, max_tokens=60, temperature=0)
    assert short.usage.completion_tokens < 60  # the model stops by itself...
    fixed = client.chat.completions.create(
        model="smollm2", messages=question, max_tokens=60, temperature=0, extra_body={"ignore_eos": True}
    )
    assert fixed.usage.completion_tokens == 60 and fixed.choices[0].finish_reason == "length"  # ...unless told not to
