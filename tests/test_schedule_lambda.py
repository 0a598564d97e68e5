"""The schedule Lambda, as shipped in the rendered folder, run in-process against a moto server: it stops
and starts a SageMaker endpoint exactly as the control plane (`modelfleet serve`) does, with the same
digest-named model and config, and the HF token read from Secrets Manager at create time."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
from botocore.exceptions import ClientError
from conftest import Gateway, cli, write_fleet
from tf_harness import render

from modelfleet.deploy.aws.schedules import aws_cron

ADMIN = "admin-key-0123456789abcdef"
HF_TOKEN = "hf_lambda_test_value_0123456789"
ENDPOINT = "lam-gated"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, moto):
    tmp = tmp_path_factory.mktemp("lambda")
    moto.client("secretsmanager").create_secret(Name="tlam/gated/hf-token", SecretString=HF_TOKEN)
    fleet = write_fleet(
        tmp,
        f"""\
state: {{store: "sqlite:///{tmp}/mf.db"}}
auth: {{admin_key: {ADMIN}}}
deployments:
  gated:
    kind: sagemaker
    endpoint: {ENDPOINT}
    container: messages
    endpoint_url: '{moto.url}'
    create:
      image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/tgi:3.0.1
      role_arn: arn:aws:iam::123456789012:role/tlam-sagemaker
      instance_type: ml.g4dn.xlarge
      model_id: meta-llama/Llama-3.2-1B-Instruct
      hf_token: aws-secret://tlam/gated/hf-token
      env: {{MAX_TOTAL_TOKENS: "4096"}}
      tags: {{owner: ml}}
routes:
  chat: {{deployments: [gated]}}
deploy: {{name: tlam, region: us-east-1}}
""",
    )
    render(fleet, tmp / "infra")
    spec = importlib.util.spec_from_file_location("lambda_schedule", tmp / "infra/lambda/lambda_schedule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    events = {a: json.loads((tmp / f"infra/events/gated-{a}.json").read_text()) for a in ("start", "stop")}
    return fleet, module, events


@pytest.fixture
def aws_env(moto, monkeypatch):
    for key, value in moto.env.items():  # the Lambda runtime's credentials and region, pointed at moto
        monkeypatch.setenv(key, value)


def _made_of(sm, name: str) -> dict:
    """What a model and its config are made of, without names, ARNs and times."""
    model = sm.describe_model(ModelName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=name)
    tags = sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]
    return {"container": model["PrimaryContainer"], "role": model["ExecutionRoleArn"],
            "variants": config["ProductionVariants"], "tags": sorted((t["Key"], t["Value"]) for t in tags)}  # fmt: skip


def _models(sm) -> list[str]:
    return sorted(m["ModelName"] for m in sm.list_models()["Models"] if m["ModelName"].startswith(ENDPOINT + "-"))


def _wait_endpoint(sm, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sm.describe_endpoint(EndpointName=ENDPOINT)
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_lambda_stops_and_starts_an_endpoint_as_the_control_plane_does(setup, moto, aws_env):
    fleet, lam, events = setup
    sm = moto.client("sagemaker")
    name = events["start"]["model"]["name"]

    # The control plane creates the model, config and endpoint at boot; the endpoint outlives the gateway.
    gw = Gateway(fleet, env=moto.env)
    try:
        assert _wait_endpoint(sm)["EndpointConfigName"] == name  # the rendered event names what it made
    finally:
        gw.stop()
    by_control_plane = _made_of(sm, name)
    assert by_control_plane["container"]["Environment"]["HF_TOKEN"] == HF_TOKEN

    # stop: the endpoint goes, the model and config stay; a second stop does nothing.
    assert lam.handler(events["stop"]) == {"endpoint": ENDPOINT, "action": "deleted", "was": "InService"}
    with pytest.raises(ClientError, match="Could not find"):
        sm.describe_endpoint(EndpointName=ENDPOINT)
    assert _models(sm) == [name] and sm.describe_endpoint_config(EndpointConfigName=name)
    assert lam.handler(events["stop"])["action"] == "none"

    # start: one call, from the kept model and config.
    assert lam.handler(events["start"]) == {"endpoint": ENDPOINT, "action": "created", "was": None}
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == name and _models(sm) == [name]
    assert lam.handler(events["start"])["action"] == "none"  # already there

    # In a fresh account the Lambda makes the same model and config the control plane made.
    sm.delete_endpoint(EndpointName=ENDPOINT)
    sm.delete_endpoint_config(EndpointConfigName=name)
    sm.delete_model(ModelName=name)
    assert lam.handler(events["start"])["action"] == "created"
    assert _made_of(sm, name) == by_control_plane
    endpoint_tags = sm.list_tags(ResourceArn=sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointArn"])["Tags"]
    assert {(t["Key"], t["Value"]) for t in endpoint_tags} == {("managed-by", "modelfleet"), ("owner", "ml")}

    # And the control plane takes the Lambda's endpoint as its own: no new model or config, stop as usual.
    gw = Gateway(fleet, env=moto.env)
    try:
        args = ["--url", gw.base, "--admin-key", ADMIN]
        assert "gated: stopped after" in cli("deployments", "stop", "gated", *args).stdout
        assert _models(sm) == [name]
        with pytest.raises(ClientError, match="Could not find"):
            sm.describe_endpoint(EndpointName=ENDPOINT)
    finally:
        gw.stop()


def test_a_missing_token_says_how_to_set_it_without_showing_anything(setup, moto, aws_env):
    _, lam, events = setup
    event = {**events["start"], "endpoint": "lam-other", "hf_token_secret": "tlam/none/hf-token"}
    event["model"] = {**event["model"], "name": "lam-other-00000000"}
    event["config"] = {**event["config"], "name": "lam-other-00000000"}
    with pytest.raises(RuntimeError, match="put-secret-value --secret-id tlam/none/hf-token"):
        lam.handler(event)
    with pytest.raises(ValueError, match="unknown action 'pause'"):
        lam.handler({**events["stop"], "action": "pause"})


@pytest.mark.parametrize(("cron", "expected"), [
    ("0 7 * * MON-FRI", "cron(0 7 ? * MON-FRI *)"),
    ("30 6 * * 1-5", "cron(30 6 ? * 2-6 *)"),  # cron's Monday is 1, EventBridge's is 2
    ("0 18 * * 0,6", "cron(0 18 ? * 1,7 *)"),
    ("15 3 1 * *", "cron(15 3 1 * ? *)"),
    ("*/30 8-17 * * *", "cron(*/30 8-17 * * ? *)"),
])  # fmt: skip
def test_cron_becomes_an_eventbridge_expression(cron, expected):
    assert aws_cron(cron, "x") == expected
