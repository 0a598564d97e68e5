"""A fleet-file mistake names the file, the YAML path, the line, and what is expected."""

from __future__ import annotations

import subprocess

import pytest
from conftest import PY, write_fleet

from modelfleet.config import default_fleet, load_fleet, parse_fleet
from modelfleet.errors import ConfigError

GOOD = """\
server:
  port: 9000
deployments:
  vllm-a:
    kind: openai
    urls: [http://gpu-1:8000/v1, http://gpu-2:8000/v1/]
    model: meta-llama/Llama-3.1-8B-Instruct
    api_key: ${VLLM_KEY}
  local:
    kind: llama-cpp
    threads: 1
routes:
  chat:
    deployments: {vllm-a: 80, local: 20}
    timeout: 500ms
  small:
    deployments: [local]
"""


def problems(text: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_fleet(text, file="fleet.yaml", env=env or {})
    return str(info.value)


def test_a_good_fleet_parses_with_defaults_and_interpolation():
    fleet = parse_fleet(GOOD, file="fleet.yaml", env={"VLLM_KEY": "sk-123"})
    dep = fleet.deployments["vllm-a"]
    assert dep.api_key is not None and dep.api_key.get_secret_value() == "sk-123"
    assert dep.urls == ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]
    assert fleet.routes["chat"].deployments == {"vllm-a": 80, "local": 20}
    assert fleet.routes["chat"].timeout == 0.5
    assert fleet.routes["small"].deployments == {"local": 1}
    assert fleet.server.port == 9000 and fleet.server.host == "127.0.0.1"


def test_unknown_field_names_path_line_and_suggests_the_right_name():
    msg = problems(GOOD.replace("    threads: 1", "    threds: 1"), {"VLLM_KEY": "x"})
    assert "fleet.yaml" in msg
    assert "deployments.local.threds (line 11)" in msg
    assert "did you mean 'threads'?" in msg


def test_wrong_type_names_the_field_and_the_value():
    msg = problems(GOOD.replace("threads: 1", "threads: two"), {"VLLM_KEY": "x"})
    assert "deployments.local.threads (line 11)" in msg
    assert "valid integer" in msg and "'two'" in msg


def test_unset_env_var_is_named_with_its_field():
    msg = problems(GOOD)
    assert "deployments.vllm-a.api_key (line 8)" in msg
    assert "environment variable VLLM_KEY is not set" in msg


def test_env_default_is_used_when_unset():
    fleet = parse_fleet(GOOD.replace("${VLLM_KEY}", "${VLLM_KEY:-none}"), env={})
    assert fleet.deployments["vllm-a"].api_key.get_secret_value() == "none"


def test_route_to_an_unknown_deployment():
    msg = problems(GOOD.replace("{vllm-a: 80, local: 20}", "{vllm-b: 80}"), {"VLLM_KEY": "x"})
    assert "routes.chat.deployments: unknown deployment 'vllm-b'; defined: local, vllm-a" in msg


def test_unknown_kind_lists_the_kinds():
    msg = problems(GOOD.replace("kind: llama-cpp", "kind: llamacpp"), {"VLLM_KEY": "x"})
    assert "deployments.local.kind (line 10): 'llamacpp' is not a known kind" in msg
    assert "'llama-cpp', 'openai'" in msg


def test_bad_duration_and_bad_url():
    msg = problems(GOOD.replace("500ms", "soon").replace("http://gpu-1:8000/v1", "gpu-1"), {"VLLM_KEY": "x"})
    assert "routes.chat.timeout (line 15)" in msg and "duration" in msg
    assert "deployments.vllm-a.urls" in msg and "http(s) base URL" in msg
    assert "2 problems" in msg


def test_a_url_with_credentials_is_refused_without_echoing_them():
    msg = problems(GOOD.replace("http://gpu-1:8000/v1", "https://bob:hunter2@gpu-1:8000/v1"), {"VLLM_KEY": "x"})
    assert "deployments.vllm-a.urls" in msg and "api_key" in msg and "hunter2" not in msg


def test_yaml_syntax_error_gives_line_and_column():
    msg = problems("deployments:\n  a: [unclosed\n")
    assert "line 3" in msg or "line 2" in msg
    assert "not valid YAML" in msg


def test_empty_file_and_missing_sections():
    assert "the file is empty" in problems("")
    assert "missing required field 'deployments'" in problems("routes: {a: {deployments: [x]}}")


def test_zero_weights_are_refused():
    msg = problems(GOOD.replace("{vllm-a: 80, local: 20}", "{vllm-a: 0}"), {"VLLM_KEY": "x"})
    assert "at least one deployment needs a weight above 0" in msg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_fleet(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value) and "cannot read" in str(info.value)


def test_default_fleet_serves_the_bundled_model():
    fleet = default_fleet()
    assert list(fleet.routes) == ["smollm2"]
    assert fleet.deployments["smollm2"].kind == "llama-cpp"


def test_cli_config_check_exits_2_and_names_the_file(tmp_path):
    bad = write_fleet(tmp_path, GOOD.replace("threads: 1", "threads: -3"))
    out = subprocess.run(
        [PY, "-m", "modelfleet", "config", "check", "-f", str(bad)],
        capture_output=True, text=True, env={"VLLM_KEY": "x", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 2
    assert str(bad) in out.stderr and "deployments.local.threads (line 11)" in out.stderr
    good = write_fleet(tmp_path, GOOD, "good.yaml")
    out = subprocess.run(
        [PY, "-m", "modelfleet", "config", "check", "-f", str(good)],
        capture_output=True, text=True, env={"VLLM_KEY": "x", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "ok: 2 deployment(s), 2 route(s)" in out.stdout


TEAMS = """\
teams:
  quant:
    keys: ["${QUANT_KEY}"]
    routes: [chat]
    limits: {rpm: 600, tokens_per_day: 2000000}
"""


def test_teams_take_keys_from_the_environment_and_check_their_routes():
    fleet = parse_fleet(GOOD + TEAMS, file="fleet.yaml", env={"VLLM_KEY": "x", "QUANT_KEY": "q" * 32})
    assert [k.get_secret_value() for k in fleet.teams["quant"].keys] == ["q" * 32] and fleet.teams[
        "quant"
    ].limits.rpm == 600
    msg = problems(GOOD + TEAMS.replace("[chat]", "[chatt]"), {"VLLM_KEY": "x", "QUANT_KEY": "q" * 32})
    assert "teams.quant.routes: unknown route 'chatt'" in msg
    msg = problems(GOOD + TEAMS, {"VLLM_KEY": "x", "QUANT_KEY": "short"})
    assert "teams.quant.keys.0 (line 20)" in msg and "at least 16 characters" in msg
    assert "short" not in msg  # a key is a secret, even a wrong one
    msg = problems(GOOD + TEAMS.replace("rpm: 600", "rpm: -1"), {"VLLM_KEY": "x", "QUANT_KEY": "q" * 32})
    assert "teams.quant.limits.rpm (line 22)" in msg


def test_fallbacks_sticky_and_strict_routes():
    text = GOOD.replace(
        "    timeout: 500ms\n", "    timeout: 500ms\n    sticky: header:X-Session-ID\n    fallbacks: [small]\n"
    )
    fleet = parse_fleet(text + "  strict:\n    deployments: [local]\n    fallbacks: none\n", env={"VLLM_KEY": "x"})
    assert fleet.routes["chat"].fallbacks == ["small"] and fleet.routes["strict"].strict
    assert fleet.routes["chat"].sticky == "header:X-Session-ID"
    assert "routes.chat.fallbacks: 'nope' is not another route" in problems(
        text.replace("[small]", "[nope]"), {"VLLM_KEY": "x"}
    )
    assert "expected 'user' or 'header:NAME'" in problems(
        text.replace("header:X-Session-ID", "cookie"), {"VLLM_KEY": "x"}
    )
    assert "state.store" in problems(GOOD + "state: {store: mysql://x}\n", {"VLLM_KEY": "x"})


def test_a_real_field_in_the_wrong_section_is_not_suggested_as_itself():
    msg = problems(GOOD.replace("    threads: 1", "    threads: 1\n    timeout: 20s"), {"VLLM_KEY": "x"})
    assert "deployments.local.timeout (line 12): unknown field 'timeout'; it is a field of another section" in msg
    assert "did you mean 'timeout'" not in msg
