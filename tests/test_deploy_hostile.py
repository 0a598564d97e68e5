"""`modelfleet deploy aws` and friends against a careless or hostile fleet file: names that would escape
the rendered folder or meet after sanitising, names too long for AWS, secrets written where they would be
copied into Terraform's state, a stale saved plan, and Ctrl-C in the middle of `terraform apply`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PY, cli
from tf_harness import ROOT, init, tf

from modelfleet.config import parse_fleet
from modelfleet.config.sagemaker_names import names
from modelfleet.deploy import files

SCHEDULES = (ROOT / "tests/fleets/deploy-schedules.yaml").read_text()
GATEWAY = (ROOT / "tests/fleets/deploy-gateway.yaml").read_text()
CREATE = """    kind: sagemaker
    endpoint: {endpoint}
    container: messages
    create:
      image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/tgi:3.0.1
      role_arn: arn:aws:iam::123456789012:role/test-sagemaker
      instance_type: ml.g4dn.xlarge
      hf_token: ${{HF_TOKEN_REF:-aws-secret://x}}
    schedule: {{start: "0 7 * * MON-FRI", stop: "0 18 * * MON-FRI", timezone: Europe/Berlin}}
"""


def fleet_of(tmp_path: Path, deployments: dict[str, str], deploy_name: str = "hostile") -> Path:
    body = "".join(f"  {json.dumps(n)}:\n{CREATE.format(endpoint=ep)}" for n, ep in deployments.items())
    route = ", ".join(json.dumps(n) for n in deployments)
    path = tmp_path / "fleet.yaml"
    path.write_text(f"deployments:\n{body}routes:\n  chat: {{deployments: [{route}]}}\n"
                    f"deploy:\n  name: {deploy_name}\n  region: us-east-1\n")  # fmt: skip
    return path


def render(fleet: Path, out: Path, check: bool = True) -> subprocess.CompletedProcess:
    return cli("deploy", "aws", "-f", str(fleet), "-o", str(out), check=check)


def test_a_deployment_name_cannot_write_outside_the_folder(tmp_path):
    fleet = fleet_of(tmp_path, {"x/../../../../escaped": "ep-one", "llama:8b": "ep-two"})
    out = tmp_path / "a/b/infra"
    render(fleet, out)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != fleet]
    assert written and all(p.is_relative_to(out) for p in written), written
    assert sorted(p.name for p in (out / "events").iterdir()) == [
        "llama_8b-start.json", "llama_8b-stop.json", "x_.._.._.._.._escaped-start.json",
        "x_.._.._.._.._escaped-stop.json"]  # fmt: skip
    assert "${path.module}/events/llama_8b-start.json" in (out / "schedules.tf").read_text()
    # Secrets Manager takes letters, digits and /_+=.@- only: the `:` is not carried into the secret's name.
    assert '"hostile/llama-8b/hf-token"' in (out / "sagemaker.tf").read_text()
    event = json.loads((out / "events/llama_8b-start.json").read_text())
    assert event["hf_token_secret"] == "hostile/llama-8b/hf-token"
    init(out, backend=False)
    tf(out, "validate")


def test_the_writer_refuses_paths_out_of_its_folder(tmp_path):
    for name in ("../x.tf", "events/../../x.tf", "/tmp/x.tf"):
        with pytest.raises(ValueError, match="outside"):
            files.write({name: b""}, tmp_path / "out")
    assert not (tmp_path / "x.tf").exists() and not (tmp_path / "out").exists()


def test_names_that_meet_after_sanitising_and_shared_endpoints_are_refused(tmp_path):
    fleet = fleet_of(tmp_path, {"a-b": "ep-one", "a.b": "ep-two", "c": "ep-one"})
    done = render(fleet, tmp_path / "infra", check=False)
    assert done.returncode == 2 and str(fleet) in done.stderr
    assert "deployments.a.b: its Terraform name 'a_b' is also 'a-b''s" in done.stderr
    assert "deployments.c.endpoint: 'ep-one' is also deployments.a-b.endpoint" in done.stderr
    assert not (tmp_path / "infra").exists()


def test_long_endpoint_names_keep_their_digest_and_schedules_stay_apart(tmp_path):
    long_a, long_b = "e" * 63, "e" * 62 + "f"
    fleet = fleet_of(tmp_path, {"a": long_a, "b": long_b}, deploy_name="abcdefghijklmnopqrst")
    out = tmp_path / "infra"
    render(fleet, out)
    parsed = parse_fleet(fleet.read_text(), env={})
    a, b = names(parsed.deployments["a"]), names(parsed.deployments["b"])
    assert a.model != b.model and len(a.model) <= 63 and a.model.endswith("-" + a.digest)
    changed = parse_fleet(fleet.read_text().replace("ml.g4dn.xlarge", "ml.g4dn.2xlarge", 1), env={})
    assert names(changed.deployments["a"]).model != a.model  # new settings, a new name
    schedules = (out / "schedules.tf").read_text()
    scheduled = [line.split('"')[1] for line in schedules.splitlines() if line.startswith("  name  ")]
    scheduled = [n for n in scheduled if n.endswith(("-start", "-stop"))]
    assert len(scheduled) == 4 == len(set(scheduled)) and all(len(n) <= 64 for n in scheduled), scheduled
    assert {n.rsplit("-", 1)[1] for n in scheduled} == {"start", "stop"}


@pytest.mark.parametrize("name", ["ab-", "a--b", "Abc", "ab", "dé-ploy", "a" * 21])
def test_deploy_names_aws_would_refuse_are_refused_at_render(tmp_path, name):
    fleet = fleet_of(tmp_path, {"a": "ep"}, deploy_name=json.dumps(name))
    done = render(fleet, tmp_path / "infra", check=False)
    assert done.returncode == 2 and "deploy.name (line" in done.stderr and "single hyphens" in done.stderr


def test_literal_secrets_bound_for_the_state_are_refused_without_echoing_them(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    text = GATEWAY.replace("teams:", "state:\n  store: postgresql://mf:pw-literal-0123@db.example.com/mf\nteams:")
    fleet.write_text(text)
    done = render(fleet, tmp_path / "infra", check=False)
    assert done.returncode == 2 and "state.store: write the URL's password as ${ENV_VAR}" in done.stderr
    assert "pw-literal" not in done.stderr + done.stdout
    fleet.write_text(text.replace("pw-literal-0123", "${DB_PASSWORD}"))
    render(fleet, tmp_path / "infra")  # a reference is fine: the gateways resolve it from their secret
    # A token in the container's env would be in the model's Terraform state and the Lambda's events.
    env = "      tags: {owner: ml}\n      env: {HF_TOKEN: hf_literal0123456789}\n"
    fleet.write_text(SCHEDULES.replace("      tags: {owner: ml}\n", env))
    done = render(fleet, tmp_path / "infra2", check=False)
    assert done.returncode == 2 and "deployments.plain.create.env.HF_TOKEN: looks like a secret" in done.stderr
    assert "hf_literal" not in done.stderr + done.stdout
    fleet.write_text(SCHEDULES.replace("      tags: {owner: ml}\n", "      env: {MAX_TOTAL_TOKENS: '8192'}\n"))
    render(fleet, tmp_path / "infra2")  # not a secret, though it says TOKENS


def test_the_gateways_may_reach_their_upstreams_ports(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    upstream = "  vllm: {kind: openai, urls: ['http://10.0.0.5:8000/v1', 'http://vllm.internal/v1']}\n"
    fleet.write_text(GATEWAY.replace("deployments:\n", "deployments:\n" + upstream)
                     .replace("deployments: [mistral]", "deployments: [mistral, vllm]"))  # fmt: skip
    render(fleet, tmp_path / "infra")
    gateway = (tmp_path / "infra/gateway.tf").read_text()
    assert 'resource "aws_security_group_rule" "gateway_to_upstream_8000"' in gateway
    assert 'resource "aws_security_group_rule" "gateway_to_upstream_80"' in gateway


def test_a_re_render_that_changes_files_drops_the_stale_saved_plan(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(SCHEDULES)
    out = tmp_path / "infra"
    render(fleet, out)
    (out / "tfplan").write_bytes(b"plan")
    assert "tfplan" not in render(fleet, out).stdout and (out / "tfplan").exists()  # nothing changed: kept
    fleet.write_text(SCHEDULES.replace("cc-42", "cc-43"))
    done = render(fleet, out)
    assert f"removed {out}/tfplan" in done.stdout and not (out / "tfplan").exists()


FAKE_TERRAFORM = """#!/bin/bash
# Stands in for terraform: `apply` creates for a while, and on Ctrl-C stops as terraform does (it finishes
# what is in flight, saves its state, prints, exits 1). Printing after the CLI has gone would kill it.
cmd="$2"
[ "$cmd" = output ] && { echo '{"gated_endpoint": {"value": {"endpoint": "gated-ep", "created_by": "lambda"}},
  "plain_endpoint": {"value": {"endpoint": "plain-ep", "created_by": "terraform"}}}'; exit 0; }
[ "$cmd" != apply ] && { echo "Terraform has been successfully initialized!"; exit 0; }
trap 'echo "Interrupt received."; echo "Stopping operation..."; sleep 1; echo "Error: operation canceled";
      echo saved > "$STATE_MARK"; exit 1' INT
echo "aws_iam_role.x: Creating..."
: > "$STARTED_MARK"
for i in $(seq 1 300); do sleep 0.1; done
"""


def test_ctrl_c_in_apply_lets_terraform_save_its_state(tmp_path):
    fake = tmp_path / "terraform"
    fake.write_text(FAKE_TERRAFORM)
    fake.chmod(0o755)
    folder = tmp_path / "infra"
    folder.mkdir()
    (folder / "versions.tf").write_text("")
    (folder / "tfplan").write_bytes(b"plan")
    started, saved = tmp_path / "started", tmp_path / "saved"
    env = {**os.environ, "MODELFLEET_TERRAFORM": str(fake), "STARTED_MARK": str(started), "STATE_MARK": str(saved)}
    argv = [PY, "-m", "modelfleet", "deploy", "apply", "-C", str(folder), "-y"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group, terraform too
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert saved.exists(), err  # terraform lived to save its state
    assert proc.returncode == 1 and "interrupted" in err and "run the same command again" in err
    assert "Stopping operation" in err


def test_a_fleet_too_big_for_one_iam_role_is_refused_at_render_not_at_apply(tmp_path):
    """Each SageMaker deployment adds its endpoint, config and model ARNs to the Lambda's (or the gateway's)
    policy, listed once each; IAM takes 10,240 characters per role."""
    many = {f"model-{i:03d}": f"team-endpoint-model-number-{i:03d}" for i in range(20)}
    render(fleet_of(tmp_path, many), tmp_path / "infra")
    policy = (tmp_path / "infra/schedules.tf").read_text().split('"start-stop-endpoints"')[1]
    assert policy.count("endpoint/team-endpoint-model-number-007") == 1
    assert policy.count("endpoint-config/team-endpoint-model-number-007-") == 1
    many = {f"model-{i:03d}": f"team-endpoint-model-number-{i:03d}" for i in range(40)}
    done = render(fleet_of(tmp_path, many), tmp_path / "infra2", check=False)
    assert done.returncode == 2 and "the hostile-schedule-lambda role's IAM policy would be about" in done.stderr
    assert "split the fleet" in done.stderr


@pytest.mark.parametrize(
    ("tags", "expected"),
    [("{'aws:team': ml}", "'aws:team' is reserved"), ("{managed-by: me}", "'managed-by' is reserved"),
     (f"{{k: {'v' * 257}}}", "values up to 256")],
)  # fmt: skip
def test_tags_aws_would_refuse_or_that_would_hide_ours_are_refused(tmp_path, tags, expected):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(SCHEDULES.replace("  tags: {cost_center: cc-42}", f"  tags: {tags}"))
    done = render(fleet, tmp_path / "infra", check=False)
    assert done.returncode == 2 and "deploy.tags (line" in done.stderr and expected in done.stderr, done.stderr


def test_destroy_names_the_endpoints_it_leaves_running(tmp_path):
    fake = tmp_path / "terraform"
    fake.write_text(FAKE_TERRAFORM)
    fake.chmod(0o755)
    folder = tmp_path / "infra"
    folder.mkdir()
    (folder / "versions.tf").write_text("")
    done = cli("deploy", "destroy", "-C", str(folder), "-y", env={"MODELFLEET_TERRAFORM": str(fake)})
    assert (
        "does not delete these SageMaker endpoints" in done.stderr
        and "gated-ep (started by the schedule Lambda)" in done.stderr
    )
    assert "plain-ep" not in done.stderr  # Terraform's own: destroyed


def test_an_unset_var_in_create_settings_is_refused_not_rendered_as_a_placeholder(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    env_line = "      tags: {owner: ml}\n      env: {REVISION: '${REV}'}\n"
    fleet.write_text(SCHEDULES.replace("      tags: {owner: ml}\n", env_line))
    env = {k: v for k, v in os.environ.items() if k != "REV"}
    done = subprocess.run([PY, "-m", "modelfleet", "deploy", "aws", "-f", str(fleet), "-o", str(tmp_path / "infra")],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "deployments.plain.create.env.REVISION: its ${VAR} is not set" in done.stderr
    done = cli("deploy", "aws", "-f", str(fleet), "-o", str(tmp_path / "infra"), env={"REV": "r-2024"})
    assert '"r-2024"' in (tmp_path / "infra/sagemaker.tf").read_text()  # create: settings render as they resolve


def test_a_region_or_instance_type_aws_lacks_is_a_warning_with_the_likely_name(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(GATEWAY.replace("region: us-east-1", "region: us-eats-1").replace(
        "    container: messages\n", "    container: messages\n    region: us-eats-1\n").replace(
        "instance_type: t3.micro", "instance_type: t3.mirco"))  # fmt: skip
    done = render(fleet, tmp_path / "infra")  # renders: a botocore older than a new region would refuse it
    assert f"warning: {fleet}: deploy.region: 'us-eats-1' is not one botocore" in done.stderr
    assert "did you mean 'us-east-1'?" in done.stderr and "did you mean 't3.micro'?" in done.stderr
    assert "warning" not in render(ROOT / "tests/fleets/deploy-gateway.yaml", tmp_path / "infra2").stderr


PLATFORM = """include:
  files: [teams.d/]
  env: {search: [SEARCH_KEY, SEARCH_HF_TOKEN]}
  team_settings: [keys]
deployments:
  base: {kind: openai, urls: ["https://api.example.com/v1"]}
routes:
  chat: {deployments: [base]}
deploy:
  name: plat
  region: us-east-1
"""
TEAM = """team: search
teams:
  search: {keys: ["${SEARCH_KEY}"]}
deployments:
  search-llm:
    kind: sagemaker
    endpoint: search-ep
    container: messages
    create:
      image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/tgi:3.0.1
      role_arn: arn:aws:iam::123456789012:role/search-sm
      instance_type: ml.g4dn.xlarge
      hf_token: ${SEARCH_HF_TOKEN}
    schedule: {start: "0 7 * * MON-FRI", stop: "0 18 * * MON-FRI", timezone: Europe/Berlin}
routes:
  search-chat: {deployments: [search-llm]}
"""


def test_a_platform_fleet_renders_without_its_teams_secrets_and_is_refused_for_a_gateway_in_aws(tmp_path):
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "teams.d/search.yaml").write_text(TEAM)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(PLATFORM)
    env = {k: v for k, v in os.environ.items() if k not in ("SEARCH_KEY", "SEARCH_HF_TOKEN")}
    argv = [PY, "-m", "modelfleet", "deploy", "aws", "-f", str(fleet), "-o", str(tmp_path / "infra")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr  # the team file's ${VARS} are not needed to render
    assert (tmp_path / "infra/events/search-llm-start.json").exists()
    assert not [f for f in (tmp_path / "infra").rglob("*") if f.is_file() and b"placeholder" in f.read_bytes()]
    # The gateways would get the platform file without its team files: refused, not a traceback.
    cert = "arn:aws:acm:us-east-1:123456789012:certificate/0b5c1d2e-3f4a-4b6c-8d9e-0f1a2b3c4d5e"
    fleet.write_text(PLATFORM + f"  gateway: ec2\n  ec2: {{count: 1}}\n  certificate_arn: {cert}\n")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "include: a gateway in AWS gets one fleet file" in done.stderr
