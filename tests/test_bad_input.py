"""The bad-input corpus: every case gets the right 4xx in the OpenAI error shape, naming the parameter
where there is one, and the gateway (and the deployment behind it) keeps serving everyone else.

Run against a fake upstream (fast) and against the real llama.cpp engine (slow): inputs the gateway
lets through must not make the engine answer 5xx either, so one client cannot eject a replica."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import Gateway, Upstream, chat_body, write_fleet

USER = [{"role": "user", "content": "hi"}]
NUMBERS = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2),
           "min_p": (0, 1), "repetition_penalty": (0.01, 5)}  # fmt: skip
INTEGERS = ["max_tokens", "n", "seed", "top_k", "max_completion_tokens", "top_logprobs"]
BOOLEANS = ["stream", "logprobs", "ignore_eos", "parallel_tool_calls"]


def _cases() -> list[tuple[str, object, int, str | None]]:
    """(id, body, status, param): the body is JSON, or bytes sent as they are."""
    cases: list[tuple[str, object, int, str | None]] = []
    for name in NUMBERS:
        for bad in ("0.7", True, [], {}, "", *((1e6,) if name != "repetition_penalty" else ())):
            cases.append((f"{name}={bad!r}", {"model": "chat", "messages": USER, name: bad}, 400, name))
    for name in INTEGERS:
        for bad in ("1", 1.5, True, [], *((-1,) if name not in ("seed", "top_k") else ())):
            cases.append((f"{name}={bad!r}", {"model": "chat", "messages": USER, name: bad}, 400, name))
    for name in BOOLEANS:
        for bad in ("true", 1, [], {}):
            cases.append((f"{name}={bad!r}", {"model": "chat", "messages": USER, name: bad}, 400, name))
    messages: list[tuple[object, str | None]] = [
        ([], "messages"), ("hi", "messages"), ([{}], None), ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"), (["hi"], "messages[0]"),
        ([{"role": "user", "content": [{"text": "x"}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": []}], "messages[0].content"),
        ([{"role": "assistant", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": "x"}, {"role": "system"}], "messages[1].content"),
    ]  # fmt: skip
    for i, (value, param) in enumerate(messages):
        cases.append((f"messages#{i}", {"model": "chat", "messages": value}, 400, param))
    others: list[tuple[str, object, int, str | None]] = [
        ("empty body", b"", 400, None), ("not json", b"{nope", 400, None), ("a list", b"[1,2]", 400, None),
        ("a string", b'"hi"', 400, None), ("a number", b"3", 400, None), ("null", b"null", 400, None),
        ("no model", {"messages": USER}, 400, "model"),
        ("model not a string", {"model": 5, "messages": USER}, 400, "model"),
        ("unknown model", {"model": "nope", "messages": USER}, 404, "model"),
        ("unknown parameter", {"model": "chat", "messages": USER, "bogus": 1}, 400, "bogus"),
        ("stop as number", {"model": "chat", "messages": USER, "stop": 5}, 400, "stop"),
        ("stop too many", {"model": "chat", "messages": USER, "stop": ["a"] * 17}, 400, "stop"),
        ("logit_bias string", {"model": "chat", "messages": USER, "logit_bias": {"1": "x"}}, 400, "logit_bias.1"),
        ("logit_bias range", {"model": "chat", "messages": USER, "logit_bias": {"1": 500}}, 400, "logit_bias.1"),
        ("stream_options string", {"model": "chat", "messages": USER, "stream_options": "x"}, 400, "stream_options"),
        ("stream_options field", {"model": "chat", "messages": USER, "stream_options": {"include_usage": "y"}},
         400, "stream_options.include_usage"),
        ("deep nesting", json.dumps({"model": "chat", "messages": USER,
                                     "metadata": None, "response_format": _deep(300)}).encode(), 400, None),
        ("invalid utf-8", b'{"model": "chat", "messages": [{"role": "user", "content": "\xff"}]}', 400, None),
        ("huge body", b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * 5_000_000 + b'"}]}',
         413, None),
    ]  # fmt: skip
    return cases + others


def _deep(n: int) -> object:
    doc: object = {}
    for _ in range(n):
        doc = {"a": doc}
    return doc


CASES = _cases()


def _post(gw, body: object) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(gw.url + "/chat/completions", content=body, headers={"Content-Type": "application/json"})
    return httpx.post(gw.url + "/chat/completions", json=body)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    up = Upstream()
    gateway = Gateway(write_fleet(tmp, f"""\
state: {{store: "sqlite:///{tmp}/mf.db"}}
deployments: {{up: {{kind: openai, urls: ["{up.url}"]}}}}
routes: {{chat: {{deployments: [up]}}}}
"""))  # fmt: skip
    yield gateway
    gateway.stop()
    up.stop()


def test_the_corpus_has_over_a_hundred_cases():
    assert len(CASES) > 100


@pytest.mark.parametrize(("name", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_gets_its_4xx_and_the_gateway_serves_on(gw, name, body, status, param):
    r = _post(gw, body)
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    assert httpx.post(gw.url + "/chat/completions", json=chat_body()).status_code == 200


# ---- what the gateway lets through must not hurt the engine either


ENGINE_CASES = [
    ("echo", "/completions", {"model": "smollm2", "prompt": "hi", "echo": True, "max_tokens": 2}),
    ("empty prompt", "/completions", {"model": "smollm2", "prompt": "", "max_tokens": 2}),
    ("prompt list of lists", "/completions", {"model": "smollm2", "prompt": [[1, 2], [3]], "max_tokens": 2}),
    ("prompt longer than the context", "/completions", {"model": "smollm2", "prompt": "hi " * 5000, "max_tokens": 2}),
    ("assistant without content", "/chat/completions",
     {"model": "smollm2", "messages": [{"role": "assistant", "content": None}], "max_tokens": 2}),
    ("image part", "/chat/completions", {"model": "smollm2", "max_tokens": 2, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}]}),
    ("tools", "/chat/completions", {"model": "smollm2", "messages": USER, "tools": [{"type": "function"}]}),
    ("n=2", "/chat/completions", {"model": "smollm2", "messages": USER, "n": 2}),
    ("json_schema garbage", "/chat/completions", {"model": "smollm2", "messages": USER, "max_tokens": 2,
                                                  "response_format": {"type": "json_schema", "json_schema": 5}}),
    ("unknown response_format", "/chat/completions",
     {"model": "smollm2", "messages": USER, "response_format": {"type": "xml"}}),
    ("logit_bias unknown token", "/chat/completions",
     {"model": "smollm2", "messages": USER, "max_tokens": 2, "logit_bias": {"99999999": 5}}),
    ("guided_json", "/chat/completions", {"model": "smollm2", "messages": USER, "guided_json": {"type": "object"}}),
]  # fmt: skip


@pytest.mark.slow
def test_the_engine_answers_below_500_and_is_never_ejected_for_a_clients_input(tmp_path, start):
    gw = start(Gateway, write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments: {{smollm2: {{kind: llama-cpp, threads: 1, health: {{eject_after: 2}}}}}}
routes: {{smollm2: {{deployments: [smollm2]}}}}
"""), timeout=180)  # fmt: skip
    for name, path, body in ENGINE_CASES * 2:  # twice: more than eject_after, were any of them a 5xx
        r = httpx.post(gw.url + path, json=body, timeout=120)
        assert r.status_code < 500, (name, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}, name
    ok = httpx.post(gw.url + "/chat/completions", timeout=120,
                    json={"model": "smollm2", "messages": USER, "max_tokens": 4})  # fmt: skip
    assert ok.status_code == 200  # the only replica is still in rotation
    assert (
        'modelfleet_replica_ready{deployment="smollm2",replica="smollm2-0"} 1.0' in httpx.get(gw.base + "/metrics").text
    )


@pytest.mark.slow
def test_the_whole_corpus_against_the_engine_leaves_its_replica_in_rotation(tmp_path, start):
    gw = start(Gateway, write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments: {{smollm2: {{kind: llama-cpp, threads: 1, health: {{eject_after: 2}}}}}}
routes: {{chat: {{deployments: [smollm2]}}}}
"""), timeout=180)  # fmt: skip
    for name, body, status, param in CASES:
        r = _post(gw, body)
        assert r.status_code == status, (name, r.text[:300])
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], name
        if param is not None:
            assert err["param"] == param, (name, err)
    ok = httpx.post(gw.url + "/chat/completions", timeout=120, json={**chat_body(), "max_tokens": 4})
    assert ok.status_code == 200
    assert (
        'modelfleet_replica_ready{deployment="smollm2",replica="smollm2-0"} 1.0' in httpx.get(gw.base + "/metrics").text
    )
