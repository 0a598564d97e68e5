"""Every client gets an answer, and no client holds the gateway: JSON write deadline, the drain, odd methods.

Real gateway and fake upstream processes on 127.0.0.1, real sockets.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
from conftest import Gateway, Upstream, chat_body, eventually, write_fleet


def _fleet(tmp_path, server: str, deployments: str, routes: str):
    return write_fleet(tmp_path, f"""\
server: {{access_log: true{server}}}
state: {{store: "sqlite:///{tmp_path}/mf.db", flush_interval: 200ms}}
deployments:
{deployments}
routes:
{routes}
""")  # fmt: skip


def test_a_json_reply_to_a_client_that_never_reads_is_cut_off(tmp_path, start):
    up = start(Upstream, "--chunks", "1000000")  # a 4 MB JSON answer: more than any socket buffers
    gw = start(Gateway, _fleet(tmp_path, ", write_timeout: 1s", f'  up: {{kind: openai, urls: ["{up.url}"]}}',
                               "  up: {deployments: [up]}"))  # fmt: skip
    body = json.dumps({**chat_body("up"), "max_tokens": 1000000}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", int(gw.base.rsplit(":", 1)[1])))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    try:  # ... and never reads: within write_timeout (checked twice) the gateway lets go of the reply
        gw.wait_for("cut off a reply whose client took no bytes for 1s", 10)
        s.settimeout(10)
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert got < 4_000_000  # the connection was closed, not the reply finished
    finally:
        s.close()
    assert httpx.post(gw.url + "/chat/completions", json={**chat_body("up"), "max_tokens": 4}).status_code == 200


def test_at_the_drain_deadline_every_request_is_answered_and_the_process_is_gone_in_time(tmp_path, start):
    slow = start(Upstream, "--delay", "60")  # JSON replies that would take a minute
    streams = start(Upstream, "--chunks", "400", "--chunk-delay", "0.05")  # a 20 s stream
    gw = start(Gateway, _fleet(
        tmp_path, ", drain_timeout: 2s",
        f'  slow: {{kind: openai, urls: ["{slow.url}"], max_concurrency: 1}}\n'
        f'  streams: {{kind: openai, urls: ["{streams.url}"]}}',
        "  slow: {deployments: [slow]}\n  streams: {deployments: [streams]}",
    ))  # fmt: skip
    answers: dict[str, object] = {}

    def call(name: str) -> None:
        try:
            r = httpx.post(gw.url + "/chat/completions", json=chat_body("slow"), timeout=30)
            answers[name] = r
        except httpx.HTTPError as exc:
            answers[name] = exc

    # One request at the only replica slot, two queued behind it; a stream under way; an idle keep-alive.
    calls = [threading.Thread(target=call, args=(n,)) for n in ("in-flight", "queued-1", "queued-2")]
    for t in calls:
        t.start()
        time.sleep(0.2)
    keep_alive = httpx.Client(timeout=30)
    assert keep_alive.get(gw.base + "/healthz").status_code == 200
    try:
        with httpx.stream("POST", gw.url + "/chat/completions", json={**chat_body("streams"), "stream": True},
                          timeout=30) as stream:  # fmt: skip
            lines = stream.iter_lines()
            next(lines)
            gw.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            gw.wait_for("shutting down: draining", 5)
            late = keep_alive.post(gw.url + "/chat/completions", json=chat_body("slow"))  # arrives during the drain
            rest = list(lines)
        assert gw.proc.wait(10) == 0
        took = time.monotonic() - sent
    finally:
        keep_alive.close()
    for t in calls:
        t.join(10)
    assert took < 2 + 1.5, took  # drain_timeout and a small margin, not twice it
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
    assert "takes no new requests" in late.json()["error"]["message"]  # at once, not at the deadline
    assert late.headers["Retry-After"] == "1" and late.headers["Connection"] == "close"
    assert any('"shutting_down"' in line for line in rest)  # the stream ended with an error event
    for name in ("in-flight", "queued-1", "queued-2"):
        r = answers[name]
        assert isinstance(r, httpx.Response), (name, r)  # an answer, not a closed connection
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down", (name, r.text)
        assert "drain_timeout ran out" in r.json()["error"]["message"]
        assert r.headers["Retry-After"] == "1" and r.headers.get("X-Request-ID")
    assert "Traceback" not in gw.output


def test_redirects_and_405s_carry_an_id_an_allow_header_and_a_log_line(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, _fleet(tmp_path, "", f'  up: {{kind: openai, urls: ["{up.url}"]}}',
                               "  up: {deployments: [up]}"))  # fmt: skip
    r = httpx.get(gw.base + "/ui", headers={"X-Request-ID": "ui-redirect-1"})
    assert r.status_code == 308 and r.headers["Location"] == "ui/" and r.headers["X-Request-ID"] == "ui-redirect-1"
    for method, path, allow in (
        ("PUT", "/admin/teams", {"GET", "POST"}),
        ("PUT", "/admin/teams/some-team", {"DELETE"}),
        ("GET", "/v1/chat/completions", {"POST"}),
        ("DELETE", "/healthz", {"GET", "HEAD"}),
    ):
        r = httpx.request(method, gw.base + path)
        assert r.status_code == 405, (method, path)
        assert {m.strip() for m in r.headers["Allow"].split(",")} == allow, (method, path)
        assert r.json()["error"]["code"] == "method_not_allowed" and r.headers.get("X-Request-ID")
    assert httpx.get(gw.base + "/v1/nowhere").status_code == 404
    # What aiohttp would answer itself, in plain text and unlogged: an unknown Expect, a path without "/".
    port = int(gw.base.rsplit(":", 1)[1])
    for raw, status in ((b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 2\r\n"
                         b"Connection: close\r\n\r\n{}", b"417"),
                        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404")):  # fmt: skip
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(raw)
            s.settimeout(10)
            answer = s.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + status) and b"X-Request-ID: " in head, answer
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
    # Refused before the proxy ran (two Authorization headers): still one access-log line.
    two = httpx.post(
        gw.url + "/chat/completions",
        json=chat_body("up"),
        headers=[("Authorization", "Bearer a-0123456789"), ("Authorization", "Bearer b-0123456789")],
    )
    assert two.status_code == 400
    for line in (r"\[ui-redirect-1\] GET /ui 308", r"PUT /admin/teams/some-team 405", r"POST /v1/chat/completions 417",
                 r"OPTIONS \* 404", r"POST /v1/chat/completions 400"):  # fmt: skip
        gw.wait_for(line, 5)


def test_admin_bodies_are_strict_and_documented_as_served(tmp_path, start):
    up = start(Upstream)
    admin_key = "answers-admin-key-0123456789"
    gw = start(Gateway, _fleet(tmp_path, "", f'  up: {{kind: openai, urls: ["{up.url}"]}}',
                               f"  up: {{deployments: [up]}}\nauth: {{admin_key: {admin_key}}}"))  # fmt: skip
    admin = {"Authorization": f"Bearer {admin_key}"}
    for body, param in (
        ({"name": "t", "limits": {"rpm": "1000"}}, "limits.rpm"),  # lax mode would have made it 1000
        ({"name": "t", "limits": {"tpm": True}}, "limits.tpm"),
        ({"name": "t", "limits": {"rpm": 1.5}}, "limits.rpm"),
        ({"name": "t", "timeout": "soon"}, "timeout"),
        ({"name": "t", "tags": {"cost_center": 42}}, "tags.cost_center"),
        ({"name": "t", "routes": "up"}, "routes"),
        ({"name": 7}, "name"),
        ({"routes": ["up"]}, "name"),
        ({"name": "t", "limit": {}}, "limit"),
        ({"name": "t", "keys": ["k"]}, "keys"),
    ):
        r = httpx.post(gw.base + "/admin/teams", json=body, headers=admin)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["param"] == param and param in err["message"] and err["type"] == "invalid_request_error", body
    made = httpx.post(gw.base + "/admin/teams", headers=admin,
                      json={"name": "t", "routes": ["up"], "limits": {"rpm": 1000}, "timeout": "30s",
                            "tags": {"cost_center": "cc-42"}})  # fmt: skip
    key = httpx.post(gw.base + "/admin/teams/t/keys", headers=admin)
    doc = httpx.get(gw.base + "/openapi.json").json()
    create, new_key = doc["paths"]["/admin/teams"]["post"], doc["paths"]["/admin/teams/{team}/keys"]["post"]
    assert made.status_code == 201 and str(made.status_code) in create["responses"]
    assert key.status_code == 201 and str(key.status_code) in new_key["responses"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    team = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert team["required"] == ["name"] and team["additionalProperties"] is False
    limits = doc["components"]["schemas"][team["properties"]["limits"]["$ref"].rsplit("/", 1)[1]]
    rpm = limits["properties"]["rpm"]["anyOf"][0]
    assert rpm["type"] == "integer" and rpm["minimum"] == 1  # what the gateway takes: an integer, not "1000"


def test_a_json_request_its_client_cancels_mid_generation_is_billed_its_max_tokens(tmp_path, start):
    up = start(Upstream, "--delay", "5")  # still generating when the client gives up
    key = "answers-team-key-0123456789"
    gw = start(Gateway, _fleet(tmp_path, "", f'  up: {{kind: openai, urls: ["{up.url}"]}}',
                               f"  up: {{deployments: [up]}}\nteams: {{q: {{keys: [{key}]}}}}"))  # fmt: skip
    auth = {"Authorization": f"Bearer {key}"}
    try:
        httpx.post(gw.url + "/chat/completions", json={**chat_body("up"), "max_tokens": 77}, headers=auth, timeout=1)
        raise AssertionError("the reply came before the client gave up")
    except httpx.ReadTimeout:
        pass  # ... and the connection is closed: the gateway sees the client leave
    gw.wait_for(r"POST /v1/chat/completions 499", 10)

    def billed() -> dict | None:
        rows = httpx.get(gw.url + "/usage", headers=auth, params={"by": "team"}).json()["data"]
        return rows[0] if rows and rows[0]["completion_tokens"] else None

    row = eventually(billed, 5, "the cancelled request is in the ledger")
    assert row["completion_tokens"] == 77 and row["prompt_tokens"] > 0  # leaving is never cheaper than staying
