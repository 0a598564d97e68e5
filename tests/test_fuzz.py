"""No input earns a 5xx: schemathesis drives every operation of /openapi.json, and hypothesis throws
arbitrary JSON bodies and header values at the API. Every answer is below 500, every error is in the
OpenAI shape, and the gateway still serves afterwards. Bounded: a few dozen examples per operation."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from conftest import Gateway, Upstream, chat_body, write_fleet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEY = "fuzz-team-key-0123456789abcdef"
ADMIN = "fuzz-admin-key-0123456789abcdef"
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    up = Upstream()
    gw = Gateway(write_fleet(tmp, f"""\
state: {{store: "sqlite:///{tmp}/mf.db"}}
auth: {{admin_key: {ADMIN}}}
teams: {{fuzz: {{keys: [{KEY}], limits: {{rpm: 1000000, tpm: 100000000}}}}}}
deployments: {{up: {{kind: openai, urls: ["{up.url}"]}}}}
routes: {{chat: {{deployments: [up]}}}}
"""))  # fmt: skip
    yield gw
    gw.stop()
    up.stop()


def assert_fine(response: httpx.Response | object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, f"{status}: {response.text[:300]}"  # type: ignore[attr-defined]
    if status >= 400 and "json" in response.headers.get("Content-Type", ""):  # type: ignore[attr-defined]
        err = response.json()["error"]  # type: ignore[attr-defined]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_every_operation_answers_below_500_in_the_openai_shape(gateway):
    schema = schemathesis.openapi.from_url(gateway.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # every operation of the API is in the document
    for operation in operations:
        fuzz(operation, ADMIN if operation.path.startswith("/admin") else KEY, gateway.base)


def fuzz(operation, key: str, base: str) -> None:
    @FUZZ
    @given(case=operation.as_strategy())
    def call(case):
        assert_fine(case.call(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30))

    call()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
near_valid = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["chat", "nope", ""]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "x"]) | json_values, "content": json_values}
            ),
            max_size=3,
        )
        | json_values,
    },
    optional={name: json_values for name in ("temperature", "top_p", "max_tokens", "stream", "stop", "n", "seed")},
)


@FUZZ
@given(body=json_values | near_valid, path=st.sampled_from(["/chat/completions", "/completions", "/embeddings"]))
def test_arbitrary_bodies_get_a_clear_answer(gateway, body, path):
    r = httpx.post(gateway.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert_fine(r)


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200).map(str.strip)


@FUZZ
@given(auth=header_text, rid=header_text, ctype=header_text)
def test_arbitrary_headers_get_a_clear_answer(gateway, auth, rid, ctype):
    headers = {"Authorization": auth, "X-Request-ID": rid, "Content-Type": ctype}
    r = httpx.post(gateway.url + "/chat/completions", json=chat_body(), headers=headers, timeout=30)
    assert_fine(r)
    assert r.headers.get("X-Request-ID")


def test_the_gateway_still_serves_after_all_that(gateway):
    r = httpx.post(gateway.url + "/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and httpx.get(gateway.base + "/healthz").status_code == 200
