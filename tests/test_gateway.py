"""The gateway over real HTTP, in front of fake OpenAI upstreams, driven by the official openai SDK.

One gateway serves routes to a healthy upstream and to upstreams that fail on purpose
(5xx, slow, dying mid-stream, vanishing); after each failure it must keep serving.
"""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from conftest import Gateway, Upstream, chat_body, write_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    ups = {
        "ok": Upstream("--chunks", "5"),
        "broken": Upstream("--status", "500"),
        "slow": Upstream("--delay", "3"),
        "dies": Upstream("--chunks", "8", "--chunk-delay", "0.01", "--die-after", "3"),
        "nodone": Upstream("--chunks", "3", "--no-done"),
        "gone": Upstream(),
        "busy": Upstream("--delay", "1"),
    }
    deployments = "\n".join(
        f"  {name}: {{kind: openai, urls: ['{u.url}'], model: up-{name}, health: {{interval: 60s}}}}"
        for name, u in ups.items()
        if name != "busy"
    )
    busy = f"  busy: {{kind: openai, urls: ['{ups['busy'].url}'], max_concurrency: 1, max_queue: 0}}"
    routes = "\n".join(
        f"  {name}: {{deployments: [{name}], timeout: 1s}}" for name in ups if name not in ("ok", "busy")
    )
    path = write_fleet(
        tmp_path_factory.mktemp("fleet"),
        f"""\
server: {{max_body_bytes: 4096}}
deployments:
{deployments}
{busy}
routes:
  chat: {{deployments: [ok], timeout: 10s}}
  busy: {{deployments: [busy], timeout: 10s}}
{routes}
""",
    )
    gw = Gateway(path)
    yield gw, ups
    gw.stop()
    for u in ups.values():
        u.stop()


@pytest.fixture
def gw(fleet):
    return fleet[0]


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0)


def test_chat_with_the_openai_sdk(client):
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    )
    reply = raw.parse()
    assert reply.model == "chat"  # the route name, not the upstream's
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens == 5 and reply.usage.total_tokens == 17
    assert raw.headers["x-modelfleet-deployment"] == "ok"
    assert raw.headers["x-request-id"]


def test_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.model == "chat" for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()


def test_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], stream=True)
    )
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize("path, body", [
    ("/chat/completions", {"messages": [{"role": "user", "content": 'say "model":"up-ok" and "usage"'}]}),
    ("/completions", {"prompt": "Once"}),
])  # fmt: skip
def test_relayed_stream_events_are_the_upstreams_with_only_the_model_renamed(fleet, http, path, body):
    gw, ups = fleet

    def events(url: str, model: str) -> list[dict]:
        with http.stream("POST", url + path, json={**body, "model": model, "stream": True}) as r:
            lines = [line for line in r.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
        return [json.loads(line[6:]) for line in lines[:-1]]  # every event is whole, valid JSON

    direct, relayed = events(ups["ok"].url, "up-ok"), events(gw.url, "chat")
    assert len(relayed) == len(direct) >= 5
    for mine, theirs in zip(relayed, direct, strict=True):
        assert mine == {**theirs, "model": "chat", "created": mine["created"], "id": mine["id"]}


def test_completions_embeddings_and_models(client):
    done = client.completions.create(model="chat", prompt="Once", max_tokens=3)  # the fake honours max_tokens
    assert done.model == "chat" and done.choices[0].text and done.usage.completion_tokens == 3
    emb = client.embeddings.create(model="chat", input="hello")
    assert emb.model == "chat" and len(emb.data[0].embedding) == 4
    ids = {m.id for m in client.models.list()}
    assert {"chat", "broken", "slow"} <= ids


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "status", "param", "needle"),
    [
        (b'{"model": "chat", "messages": [', 400, None, "not valid JSON"),
        (b"[1, 2]", 400, None, "must be a JSON object"),
        (b"", 400, None, "body is empty"),
        (json.dumps(chat_body(temperature=5)).encode(), 400, "temperature", "less than or equal to 2"),
        (json.dumps(chat_body(max_tokens="ten")).encode(), 400, "max_tokens", "valid integer"),
        (json.dumps(chat_body(temprature=1)).encode(), 400, "temprature", "Unrecognized request argument"),
        (json.dumps({"model": "chat"}).encode(), 400, "messages", "Missing required parameter"),
        (
            json.dumps(chat_body(messages=[{"role": "robot", "content": "x"}])).encode(),
            400,
            "messages[0].role",
            "'user'",
        ),
    ],
)
def test_bad_input_gets_a_clear_400(gw, http, body, status, param, needle):
    resp = http.post(gw.url + "/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status
    err = error_of(resp)
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert needle in err["message"]


def test_unknown_model_is_404_model_not_found(gw, client, http):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    assert "'gpt-9' does not exist" in info.value.message and "chat" in info.value.message


def test_oversized_body_is_413(gw, http):
    big = chat_body(messages=[{"role": "user", "content": "x" * 10_000}])
    resp = http.post(gw.url + "/chat/completions", json=big)
    assert resp.status_code == 413
    assert "exceeds the limit of 4096 bytes (server.max_body_bytes)" in error_of(resp)["message"]


def test_unknown_path_and_wrong_method_are_openai_errors(gw, http):
    resp = http.post(gw.url + "/chat/complete", json=chat_body())
    assert resp.status_code == 404 and "unknown path /v1/chat/complete" in error_of(resp)["message"]
    resp = http.get(gw.url + "/chat/completions")
    assert resp.status_code == 405 and error_of(resp)["code"] == "method_not_allowed"


def test_request_id_is_echoed_and_logged(gw, http):
    resp = http.post(gw.url + "/chat/completions", json=chat_body(max_tokens=2), headers={"X-Request-ID": "trace-42"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "trace-42"
    gw.wait_for(r"\[trace-42\] POST /v1/chat/completions 200 .* route=chat deployment=ok replica=ok-0", 5)
    resp = http.post(gw.url + "/chat/completions", json=chat_body(), headers={"X-Request-ID": "bad id\twith space"})
    assert len(resp.headers["x-request-id"]) == 24  # replaced by a generated one


def test_upstream_5xx_is_502_naming_the_deployment(gw, client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "deployment 'broken' replica broken-0 failed with HTTP 500: injected failure 500" in info.value.message
    test_chat_with_the_openai_sdk(client)  # still serving


def test_upstream_timeout_is_504(gw, client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 504
    assert "did not answer within the 1s left of the request" in info.value.message
    test_chat_with_the_openai_sdk(client)


def test_refused_connection_is_502(fleet, client):
    _, ups = fleet
    ups["gone"].stop()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gone", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert "could not be reached" in info.value.message and "gone-0" in info.value.message
    test_chat_with_the_openai_sdk(client)


def test_stream_that_dies_midway_ends_with_an_error_event(gw, client):
    stream = client.chat.completions.create(model="dies", messages=[{"role": "user", "content": "x"}], stream=True)
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            got.append(chunk)
    assert got, "the first chunks arrive before the failure"
    assert "broke off the stream" in str(info.value.message)
    test_chat_with_the_openai_sdk(client)


def test_a_complete_stream_that_lacks_only_done_is_not_reported_broken(gw, client):
    # It finished (finish_reason) and nothing else was missing: the gateway ends it with [DONE] itself.
    chunks = list(client.chat.completions.create(model="nodone", messages=[{"role": "user", "content": "x"}],
                                                 stream=True))  # fmt: skip
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"


def test_full_queue_is_503_with_retry_after(gw):
    # busy: one slot, no queue, 1 s per answer: of three concurrent requests one is served, two refused.
    results: list[httpx.Response] = []

    def send():
        results.append(httpx.post(gw.url + "/chat/completions", json=chat_body("busy"), timeout=10))

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 503, 503]
    refused = next(r for r in results if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    err = error_of(refused)
    assert err["code"] == "deployment_overloaded" and "'busy' is at capacity" in err["message"]


def test_metrics_and_readiness(gw, http):
    http.post(gw.url + "/chat/completions", json=chat_body(max_tokens=1))
    text = http.get(gw.base + "/metrics").text
    assert 'modelfleet_requests_total{deployment="ok",route="chat",status="200",team="-",variant="ok"}' in text
    assert (
        'modelfleet_requests_total{deployment="broken",route="broken",status="502",team="-",variant="broken"}' in text
    )
    assert (
        'modelfleet_request_duration_seconds_bucket{deployment="ok",le="+Inf",route="chat",team="-",variant="ok"}'
        in text
    )
    assert 'modelfleet_output_tokens_total{deployment="ok",route="chat",team="-",variant="ok"}' in text
    assert 'modelfleet_replica_ready{deployment="ok",replica="ok-0"} 1.0' in text
    assert http.get(gw.base + "/healthz").json() == {"status": "ok"}
    assert http.get(gw.base + "/health").json() == {"status": "ok"}
    ready = http.get(gw.base + "/readyz").json()
    assert ready["routes"]["chat"] is True
