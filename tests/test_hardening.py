"""A hostile client hurts no one else: each class of the hardening issue, with real processes and sockets."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time

import httpx
import openai
import pytest
from conftest import Gateway, Upstream, chat_body, eventually, proxy_fleet, write_fleet

KEY = "hardening-team-key-0123456789"
ADMIN = "hardening-admin-key-0123456789"


def test_a_stalled_reader_is_cut_off_and_its_slot_freed(tmp_path, start):
    up = start(Upstream, "--chunks", "200000")  # ~30 MB of events: more than any socket buffers
    path = proxy_fleet(tmp_path, {"up": up.url}, ", write_timeout: 1s")
    path.write_text(path.read_text().replace('urls: ["' + up.url + '"]', f'urls: ["{up.url}"], max_concurrency: 1'))
    gw = start(Gateway, path)
    body = json.dumps({**chat_body("up"), "stream": True, "max_tokens": 200000}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", int(gw.base.rsplit(":", 1)[1])))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    try:  # ... and never reads. The only replica slot is held until write_timeout cuts the stream.
        gw.wait_for("cut off a stream whose client took no bytes", 10)
        r = httpx.post(gw.url + "/chat/completions", json={**chat_body("up"), "max_tokens": 4}, timeout=10)
        assert r.status_code == 200  # the slot is free again
    finally:
        s.close()


def test_slow_headers_and_a_short_body_are_not_held_forever(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}, ", header_timeout: 1s, body_timeout: 1s"))
    port = int(gw.base.rsplit(":", 1)[1])
    loris = socket.create_connection(("127.0.0.1", port))
    loris.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    loris.settimeout(10)
    started = time.monotonic()
    assert loris.recv(100) == b""  # closed by the server
    assert time.monotonic() - started < 5
    short = socket.create_connection(("127.0.0.1", port))
    short.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 500\r\n\r\n{\"model\":")  # fmt: skip
    short.settimeout(10)
    answer = short.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer
    assert httpx.get(gw.base + "/healthz").status_code == 200


def test_a_stream_dropped_by_its_client_is_billed_what_was_generated(tmp_path, start):
    up = start(Upstream, "--chunks", "40", "--chunk-delay", "0.05")
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}, extra=f"teams: {{q: {{keys: [{KEY}]}}}}"))
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", gw.url + "/chat/completions", headers=auth,
                      json={**chat_body("up"), "stream": True}) as r:  # fmt: skip
        lines = 0
        for line in r.iter_lines():
            lines += line.startswith("data: ")
            if lines == 10:
                break  # and hang up, before the usage chunk

    def billed() -> int:
        rows = httpx.get(gw.url + "/usage", headers=auth, params={"by": "team"}).json()["data"]
        return rows[0]["completion_tokens"] + rows[0]["prompt_tokens"] if rows else 0

    eventually(lambda: billed() >= 10, 5, "the dropped stream is in the ledger")


def test_clients_that_hang_up_before_the_reply_are_quiet_and_harmless(tmp_path, start):
    up = start(Upstream, "--delay", "0.3")
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}))
    port = int(gw.base.rsplit(":", 1)[1])
    for stream in (True, False) * 4:
        body = json.dumps({**chat_body("up"), "stream": stream}).encode()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        s.close()  # gone before the upstream answers
    time.sleep(0.8)
    assert httpx.post(gw.url + "/chat/completions", json=chat_body("up")).status_code == 200
    gw.stop()
    assert "Traceback" not in gw.output and "unhandled error" not in gw.output


def test_an_upstream_429_tries_another_replica_then_passes_retry_after_on(tmp_path, start):
    busy, ok = start(Upstream, "--status", "429", "--retry-after", "7"), start(Upstream)
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments:
  pair: {{kind: openai, urls: ["{busy.url}", "{ok.url}"], health: {{eject_after: 2}}}}
  alone: {{kind: openai, urls: ["{busy.url}"]}}
routes: {{pair: {{deployments: [pair]}}, alone: {{deployments: [alone]}}}}
""")  # fmt: skip
    gw = start(Gateway, path)
    assert all(httpx.post(gw.url + "/chat/completions", json=chat_body("pair")).status_code == 200 for _ in range(8))
    r = httpx.post(gw.url + "/chat/completions", json=chat_body("alone"))
    assert r.status_code == 429 and r.headers["Retry-After"] == "7" and r.json()["error"]["code"] == "upstream_busy"
    assert "pair-0" not in httpx.get(gw.base + "/readyz").text  # busy is not broken: never ejected


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_compresses_is_decoded(tmp_path, start, stream):
    up = start(Upstream, "--gzip")
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}))
    client = openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0)
    if stream:
        chunks = list(client.chat.completions.create(model="up", messages=[{"role": "user", "content": "x"}],
                                                     stream=True))  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("tok")
    else:
        reply = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content.startswith("tok")


def test_no_secret_reaches_any_log_line(tmp_path, start):
    up = start(Upstream)
    gw = start(
        Gateway,
        proxy_fleet(tmp_path, {"up": up.url}, extra=f"auth: {{admin_key: {ADMIN}}}\nteams: {{q: {{keys: [{KEY}]}}}}"),
    )
    port = int(gw.base.rsplit(":", 1)[1])
    for key in (KEY, ADMIN, "never-seen-key-0123456789"):
        httpx.post(gw.url + "/chat/completions", json=chat_body("up"), headers={"Authorization": f"Bearer {key}"})
        httpx.get(gw.base + "/admin/teams", headers={"Authorization": f"Bearer {key}"})
    # A header line too long for aiohttp's parser, holding a key: a 400, and one WARNING line.
    big = socket.create_connection(("127.0.0.1", port))
    big.sendall(
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"A" * 9000 + b"\r\n\r\n"
    )
    big.settimeout(10)
    answer = big.recv(65536)
    assert b" 400 " in answer.split(b"\r\n")[0]  # aiohttp's own answer, to that client only
    big.close()
    gw.wait_for("refused a malformed request", 5)
    gw.stop()
    assert KEY not in gw.output and ADMIN not in gw.output
    assert "Traceback" not in gw.output


def test_sigterm_ends_open_streams_at_the_drain_deadline_and_flushes_usage(tmp_path, start):
    up = start(Upstream, "--chunks", "400", "--chunk-delay", "0.05")  # a 20 s stream
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}, ", drain_timeout: 1s"))
    with httpx.stream("POST", gw.url + "/chat/completions", json={**chat_body("up"), "stream": True},
                      timeout=30) as r:  # fmt: skip
        it = r.iter_lines()
        next(it)
        gw.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest = list(it)
    assert time.monotonic() - started < 4  # ended at the deadline, not after the stream's 20 s
    assert any('"shutting_down"' in line for line in rest)  # with an explicit error event
    assert gw.proc.wait(20) == 0
    rows = sqlite3.connect(tmp_path / "mf.db").execute("SELECT requests, completion_tokens FROM usage").fetchall()
    assert rows and rows[0][0] == 1 and rows[0][1] > 0  # and it was billed before the process exited


def test_the_small_things_users_notice(tmp_path, start):
    up = start(Upstream)
    extra = f"auth: {{admin_key: {ADMIN}}}\nteams: {{q: {{keys: [{KEY}], limits: {{tpm: 1000}}}}}}"
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}, extra=extra))
    auth = {"Authorization": f"Bearer {KEY}"}
    for url, headers in (
        (gw.url + "/models", auth),
        (gw.base + "/healthz", {}),
        (gw.base + "/readyz", {}),
        (gw.base + "/admin/teams", {"Authorization": f"Bearer {ADMIN}"}),
        (gw.url + "/models", {}),
    ):
        r = httpx.get(url, headers=headers)
        assert r.headers.get("X-Request-ID"), url  # on every response, errors and successes alike
    assert httpx.head(gw.base + "/healthz").status_code == 200 and httpx.head(gw.base + "/readyz").status_code == 200
    two = socket.create_connection(("127.0.0.1", int(gw.base.rsplit(":", 1)[1])))
    two.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                b"Authorization: Bearer other-key-0123456789\r\nConnection: close\r\n\r\n" % KEY.encode())  # fmt: skip
    two.settimeout(10)
    answer = two.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400") and b'"param":"Authorization"' in answer
    r = httpx.post(gw.url + "/chat/completions", json={**chat_body("up"), "max_tokens": 5000}, headers=auth)
    assert r.status_code == 400 and "can never be admitted" in r.json()["error"]["message"]
    # Every request is in the access log and in /metrics, a 401 on /v1/models too.
    assert httpx.get(gw.url + "/models").status_code == 401
    assert httpx.get(gw.base + "/metrics", headers=auth).status_code == 401  # a team key cannot read every team's
    metrics = httpx.get(gw.base + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert 'modelfleet_api_requests_total{path="/v1/models",status="401"}' in metrics
    gw.wait_for(r"GET /v1/models 401", 5)


def test_a_replica_that_breaks_every_stream_is_ejected(tmp_path, start):
    broken, ok = start(Upstream, "--die-after", "2"), start(Upstream)
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments:
  pair: {{kind: openai, urls: ["{broken.url}", "{ok.url}"], health: {{eject_after: 2, eject_for: 60s, interval: 60s}}}}
routes: {{pair: {{deployments: [pair]}}}}
""")  # fmt: skip
    gw = start(Gateway, path)
    for _ in range(12):  # every stream on pair-0 breaks after its first events, after the headers were sent
        with httpx.stream("POST", gw.url + "/chat/completions", json={**chat_body("pair"), "stream": True}) as r:
            list(r.iter_lines())
    ready = httpx.get(gw.base + "/readyz").json()
    assert [r["replica"] for r in ready["not_ready"]["pair"]] == ["pair-0"]
    assert "ejected" in ready["not_ready"]["pair"][0]["reason"]


def test_an_upstream_that_echoes_the_gateways_key_never_shows_it_and_a_401_is_the_deployments_fault(tmp_path, start):
    secret = "sk-upstream-SECRET-0123456789"
    echo = start(Upstream, "--status", "401", "--error-message", "Incorrect API key provided: {auth}")
    path = write_fleet(tmp_path, f"""\
state: {{store: "sqlite:///{tmp_path}/mf.db"}}
deployments:
  up: {{kind: openai, urls: ["{echo.url}"], api_key: "{secret}", health: {{eject_after: 2, interval: 60s}}}}
routes: {{up: {{deployments: [up]}}}}
""")  # fmt: skip
    gw = start(Gateway, path, wait_ready=False)
    gw.wait_for("listening on", 20)
    for _ in range(3):
        r = httpx.post(gw.url + "/chat/completions", json=chat_body("up"))
        assert secret not in r.text and "sk-upstream" not in r.text
        assert r.status_code in (502, 503)  # the gateway's credential is wrong: not the caller's 401
    assert "ejected" in httpx.get(gw.base + "/readyz").text or r.status_code == 503
    gw.stop()
    assert secret not in gw.output


def test_values_no_server_can_count_are_refused(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}))
    for extra, param in (({"max_tokens": 2**40}, "max_tokens"), ({"n": 1000}, "n"),
                         ({"logit_bias": {"abc": 1}}, None), ({"min_tokens": 2**40}, "min_tokens")):  # fmt: skip
        r = httpx.post(gw.url + "/chat/completions", json={**chat_body("up"), **extra})
        assert r.status_code == 400, extra
        if param:
            assert r.json()["error"]["param"] == param


def test_odd_paths_and_spans_get_clear_answers_and_one_log_line(tmp_path, start):
    up = start(Upstream)
    gw = start(Gateway, proxy_fleet(tmp_path, {"up": up.url}))
    r = httpx.get(gw.base + "/v1/x%0Ay")
    assert r.status_code == 404 and r.headers.get("X-Request-ID") and r.json()["error"]["code"] == "not_found"
    r = httpx.get(gw.url + "/usage", params={"since": "\u0667d"})  # an Arabic-Indic seven: not a span we take
    assert r.status_code == 400 and r.json()["error"]["param"] == "since"
    gw.stop()
    lines = [line for line in gw.output.splitlines() if "modelfleet.access" in line and "/v1/x" in line]
    assert len(lines) == 1 and "\\n" in lines[0]  # escaped: one request, one line
