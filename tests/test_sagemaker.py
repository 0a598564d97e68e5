"""SageMaker deployments against a real AWS API on 127.0.0.1 (moto in server mode), through the gateway,
with the official openai SDK. (Response streams, which moto lacks: test_sagemaker_wire.py and
test_sagemaker_stream.py.)"""

from __future__ import annotations

import json

import openai
import pytest
from botocore.exceptions import ClientError
from conftest import Gateway, cli, write_fleet

ADMIN = "admin-key-0123456789abcdef"
HF_TOKEN = "hf_secret_value_0123456789"
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"


def create(endpoint: str) -> str:
    return ("{image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/tgi:latest, "
            "role_arn: 'arn:aws:iam::123456789012:role/sm', instance_type: ml.g4dn.xlarge, "
            "model_id: HuggingFaceTB/SmolLM2-135M-Instruct, hf_token: 'aws-secret://hf#token', "
            f"tags: {{cost_center: cc-42, endpoint: {endpoint}}}}}")  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, moto):
    tmp = tmp_path_factory.mktemp("sagemaker")
    (tmp / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE, "eos_token": "</s>"}))
    moto.client("secretsmanager").create_secret(Name="hf", SecretString=json.dumps({"token": HF_TOKEN}))
    common = f"endpoint_url: '{moto.url}', chat_template: '{tmp}/tokenizer_config.json'"
    path = write_fleet(tmp, f"""\
state: {{store: "sqlite:///{tmp}/mf.db"}}
auth: {{admin_key: {ADMIN}}}
deployments:
  tgi: {{kind: sagemaker, endpoint: llama-tgi, container: tgi, {common}, create: {create("tgi")}}}
  lmi: {{kind: sagemaker, endpoint: llama-lmi, container: lmi, {common}, create: {create("lmi")},
         wake_on_request: true, wake_timeout: 30s}}
  msgs: {{kind: sagemaker, endpoint: llama-msgs, container: messages, endpoint_url: '{moto.url}',
          create: {create("msgs")}}}
routes:
  tgi: {{deployments: [tgi]}}
  lmi: {{deployments: [lmi]}}
  msgs: {{deployments: [msgs]}}
""")  # fmt: skip
    gw = Gateway(path, env=moto.env)
    yield gw
    gw.stop()


def config_of(sm, endpoint: str) -> str:
    """The model and config share a name: the endpoint's and a digest of their settings."""
    return next(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]
                if c["EndpointConfigName"].startswith(endpoint + "-"))  # fmt: skip


def chat(gw, model: str):
    client = openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Capital of France?"}],
                                          max_tokens=8)  # fmt: skip


def test_the_gateway_creates_each_endpoint_with_its_model_and_config(fleet, moto):
    sm = moto.client("sagemaker")
    for name in ("llama-tgi", "llama-lmi", "llama-msgs"):
        endpoint = sm.describe_endpoint(EndpointName=name)
        assert endpoint["EndpointStatus"] == "InService"
        config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"
        assert endpoint["EndpointConfigName"].startswith(f"{name}-")  # named with a digest of its settings
    model = sm.describe_model(ModelName=config_of(sm, "llama-tgi"))
    env = model["PrimaryContainer"]["Environment"]
    assert env["HF_MODEL_ID"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert env["HF_TOKEN"] == HF_TOKEN  # resolved from Secrets Manager ...
    assert HF_TOKEN not in fleet.output  # ... and never logged


def test_tgi_lmi_and_messages_containers_answer_in_openai_shape(fleet, moto):
    moto.queue_results([{"generated_text": "Paris.", "details": {
        "finish_reason": "eos_token", "generated_tokens": 3, "prefill": [{"id": i} for i in range(9)]}}])  # fmt: skip
    reply = chat(fleet, "tgi")
    assert reply.model == "tgi" and reply.choices[0].message.content == "Paris."
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 3)  # TGI's own counts

    moto.queue_results({"generated_text": "Paris, France", "details": {"finish_reason": "length",
                                                                       "generated_tokens": 8}})  # fmt: skip
    reply = chat(fleet, "lmi")
    assert reply.choices[0].message.content == "Paris, France" and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 0

    moto.queue_results({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "tgi-on-sm",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}})  # fmt: skip
    reply = chat(fleet, "msgs")
    assert reply.model == "msgs" and reply.choices[0].message.content == "Paris" and reply.usage.total_tokens == 12


def test_a_garbled_container_reply_is_a_502_naming_the_deployment(fleet, moto):
    moto.queue_results("not json at all")
    with pytest.raises(openai.APIStatusError) as err:
        chat(fleet, "lmi")
    assert err.value.status_code == 502 and "deployment 'lmi'" in err.value.message


def test_stop_deletes_the_endpoint_but_keeps_model_and_config_and_start_brings_it_back(fleet, moto):
    sm = moto.client("sagemaker")
    args = ["--url", fleet.base, "--admin-key", ADMIN]
    assert "tgi: stopped after" in cli("deployments", "stop", "tgi", *args).stdout
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName="llama-tgi")
    kept = config_of(sm, "llama-tgi")
    assert sm.describe_model(ModelName=kept) and sm.describe_endpoint_config(EndpointConfigName=kept)
    refused = openai.OpenAI(base_url=fleet.url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError, match="stopped"):  # no wake_on_request on this one
        refused.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "hi"}])
    status = {d["name"]: d for d in json.loads(cli("deployments", "status", "--json", *args).stdout)}
    assert status["tgi"]["desired"] == status["tgi"]["observed"] == "stopped"
    assert status["lmi"]["observed"] == "running"
    assert "tgi: running after" in cli("deployments", "start", "tgi", *args).stdout
    assert sm.describe_endpoint(EndpointName="llama-tgi")["EndpointStatus"] == "InService"


def test_a_request_wakes_a_stopped_endpoint(fleet, moto):
    args = ["--url", fleet.base, "--admin-key", ADMIN]
    cli("deployments", "stop", "lmi", *args)
    with pytest.raises(ClientError, match="Could not find endpoint"):
        moto.client("sagemaker").describe_endpoint(EndpointName="llama-lmi")
    moto.queue_results({"generated_text": "awake", "details": {"finish_reason": "stop", "generated_tokens": 1}})
    assert chat(fleet, "lmi").choices[0].message.content == "awake"  # created again, then answered
    assert moto.client("sagemaker").describe_endpoint(EndpointName="llama-lmi")["EndpointStatus"] == "InService"
    status = {d["name"]: d for d in json.loads(cli("deployments", "status", "--json", *args).stdout)}
    assert status["lmi"]["wakes"] == 1 and status["lmi"]["reason"] == "woken by a request"
