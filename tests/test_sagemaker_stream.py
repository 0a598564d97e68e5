"""SageMaker response streams end to end: the gateway's botocore client reads real event-stream frames
from a fake SageMaker runtime over HTTP (moto has no response streaming), the openai SDK reads the gateway."""

from __future__ import annotations

import openai
import pytest
from conftest import PY, Gateway, Proc, write_fleet

TEMPLATE = "{% for m in messages %}{{ m.content }}\n{% endfor %}"


class FakeSageMaker(Proc):
    def __init__(self, *flags: str):
        argv = [PY, "-m", "modelfleet.testing.fake_sagemaker", "--port", "0", *flags]
        super().__init__(argv, r"FAKE_SAGEMAKER_READY port=(\d+)", stream="stdout")
        self.url = f"http://127.0.0.1:{self.match.group(1)}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, moto):
    tmp = tmp_path_factory.mktemp("smstream")
    (tmp / "t.jinja").write_text(TEMPLATE)
    ok, failing = FakeSageMaker("--tokens", "6", "--part-bytes", "7"), FakeSageMaker("--fail-after", "2")
    deps = "".join(
        f"  {name}: {{kind: sagemaker, endpoint: {name}, container: tgi, endpoint_url: '{moto.url}', "
        f"runtime_url: '{fake.url}', "
        f"chat_template: '{tmp}/t.jinja'}}\n"
        for name, fake in (("ok", ok), ("failing", failing))
    )
    path = write_fleet(tmp, f"state: {{store: 'sqlite:///{tmp}/mf.db'}}\ndeployments:\n{deps}"
                            "routes:\n  ok: {deployments: [ok]}\n  failing: {deployments: [failing]}\n")  # fmt: skip
    # The endpoints are managed elsewhere (no `create:`): the platform's DescribeEndpoint goes to moto.
    sm = moto.client("sagemaker")
    for name in ("ok", "failing"):
        sm.create_model(ModelName=f"{name}-m", ExecutionRoleArn="arn:aws:iam::123456789012:role/sm",
                        PrimaryContainer={"Image": "tgi"})  # fmt: skip
        variant = {"VariantName": "v", "ModelName": f"{name}-m", "InstanceType": "ml.g4dn.xlarge",
                   "InitialInstanceCount": 1}  # fmt: skip
        sm.create_endpoint_config(EndpointConfigName=f"{name}-c", ProductionVariants=[variant])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
    g = Gateway(path, env=moto.env)
    yield g
    g.stop()
    ok.stop()
    failing.stop()


def test_a_stream_cut_mid_event_arrives_whole_with_usage(gw):
    client = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " tok0 tok1 tok2 tok3 tok4 tok5"
    assert chunks[-1].usage.completion_tokens == 6 and all(c.model == "ok" for c in chunks)


def test_a_model_stream_error_ends_the_stream_with_an_error_event(gw):
    client = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    got = []
    with pytest.raises(openai.APIError, match="ModelStreamError"):
        for c in client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "hi"}],
                                                stream=True):  # fmt: skip
            got.append(c)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == " tok0 tok1"
