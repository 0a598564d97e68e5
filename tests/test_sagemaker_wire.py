"""SageMaker container formats <-> OpenAI, including response streams cut at every byte."""

from __future__ import annotations

import json

import pytest
from botocore.eventstream import EventStreamBuffer

from modelfleet.backends.sagemaker_wire import (
    ContainerError,
    StreamDecoder,
    from_container,
    payload_parts,
    to_container,
)
from modelfleet.testing.fake_sagemaker import frame

CHAT = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0,
        "stop": "END", "top_p": 0.9, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip


def test_requests_per_schema():
    tgi = to_container(CHAT, "tgi", "<prompt>", stream=True)
    assert tgi == {"inputs": "<prompt>", "stream": True, "parameters": {
        "details": True, "max_new_tokens": 5, "do_sample": False, "top_p": 0.9, "stop": ["END"]}}  # fmt: skip
    lmi = to_container({**CHAT, "temperature": 0.7}, "lmi", "<prompt>", stream=False)
    assert lmi["parameters"]["stop_sequences"] == ["END"] and "stop" not in lmi["parameters"]
    assert lmi["parameters"]["temperature"] == 0.7 and lmi["parameters"]["do_sample"] is True
    msgs = to_container(CHAT, "messages", None, stream=True)
    assert msgs["messages"] == CHAT["messages"] and "model" not in msgs and "stream_options" not in msgs


def test_replies_per_schema():
    tgi = b'[{"generated_text": "Hello!", "details": {"finish_reason": "eos_token", "generated_tokens": 3}}]'
    doc = from_container(tgi, "tgi", model="r", chat=True, prompt_tokens=7)
    assert doc["choices"][0]["message"]["content"] == "Hello!" and doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    lmi = b'{"generated_text": "Hi", "details": {"finish_reason": "length", "generated_tokens": 5}}'
    doc = from_container(lmi, "lmi", model="r", chat=False, prompt_tokens=2)
    assert doc["object"] == "text_completion" and doc["choices"][0]["finish_reason"] == "length"
    with pytest.raises(ContainerError):
        from_container(b'{"error": "bad", "code": 424}', "lmi", model="r", chat=True, prompt_tokens=0)


def tgi_stream() -> bytes:
    words = ["Deep", " learning", " rocks"]
    events = [{"index": i, "token": {"id": i, "text": t, "logprob": -0.1, "special": False},
               "generated_text": None, "details": None} for i, t in enumerate(words)]  # fmt: skip
    events.append({"index": 3, "token": {"id": 2, "text": "</s>", "logprob": 0, "special": True},
                   "generated_text": "Deep learning rocks",
                   "details": {"finish_reason": "eos_token", "generated_tokens": 4, "seed": None}})  # fmt: skip
    return b"".join(b"data:" + json.dumps(e).encode() + b"\n\n" for e in events)


def lmi_stream() -> bytes:
    lines = [{"token": {"id": i, "text": t, "log_prob": -0.1}} for i, t in enumerate(["Deep", " learning", " rocks"])]
    lines[-1].update(generated_text="Deep learning rocks", details={"finish_reason": "length", "generated_tokens": 3})
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def decode(schema, parts):
    dec = StreamDecoder(schema, model="r", chat=True, prompt_tokens=9)
    out = [c for p in parts for c in dec.feed(p)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in out if c["choices"])
    return text, out[-1]["usage"], [c["choices"][0]["finish_reason"] for c in out if c["choices"]][-1], dec.done


@pytest.mark.parametrize(("schema", "stream", "tokens", "finish"), [("tgi", tgi_stream(), 4, "stop"),
                                                                      ("lmi", lmi_stream(), 3, "length")])  # fmt: skip
def test_streams_decode_the_same_at_every_split_point(schema, stream, tokens, finish):
    whole = decode(schema, [stream])
    assert whole == ("Deep learning rocks", {"prompt_tokens": 9, "completion_tokens": tokens,
                                             "total_tokens": 9 + tokens}, finish, True)  # fmt: skip
    for cut in range(1, len(stream)):
        assert decode(schema, [stream[:cut], stream[cut:]]) == whole, cut


def test_lmi_error_mid_stream_and_stream_error_events():
    bad = b'{"token": {"id": 1, "text": "a"}}\n{"generated_text": "", "details": {"finish_reason": "error"}}\n'
    dec = StreamDecoder("lmi", model="r", chat=True, prompt_tokens=1)
    with pytest.raises(ContainerError):
        dec.feed(bad)
    events = [{"PayloadPart": {"Bytes": b"ab"}}, {"ModelStreamError": {"Message": "OOM", "ErrorCode": "500"}}]
    parts = payload_parts(events)
    assert next(parts) == b"ab"
    with pytest.raises(ContainerError, match="ModelStreamError 500: OOM"):
        next(parts)


def test_real_eventstream_frames_split_anywhere_decode_to_the_same_answer():
    container = tgi_stream()
    parts = [container[i : i + 37] for i in range(0, len(container), 37)]  # PayloadParts cut mid-event
    wire = b"".join(frame(p) for p in parts)
    expected = decode("tgi", [container])
    for cut in range(1, len(wire), 7):
        buf = EventStreamBuffer()  # botocore's own decoder checks lengths and CRCs
        messages = []
        for piece in (wire[:cut], wire[cut:]):
            buf.add_data(piece)
            messages.extend(buf)
        events = [{m.headers[":event-type"]: {"Bytes": m.payload}} for m in messages]
        assert decode("tgi", list(payload_parts(events))) == expected


def test_chat_template_from_tokenizer_config_matches_llama_cpp(tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp import llama_chat_format

    from modelfleet.backends.chat_template import ChatTemplate
    from modelfleet.engine.model import bundled_model_path

    llm = llama_cpp.Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    source = llm.metadata["tokenizer.chat_template"]
    eos = llm._model.token_get_text(llm.token_eos())
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": source, "eos_token": {"content": eos}, "bos_token": None})
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
    ]
    ours = ChatTemplate.load(tmp_path / "tokenizer_config.json").render(messages)
    theirs = llama_chat_format.Jinja2ChatFormatter(template=source, eos_token=eos, bos_token="")(messages=messages)
    assert ours == theirs.prompt
    assert ours.endswith("<|im_start|>assistant\n")


def test_a_template_that_raises_or_is_missing_is_a_clear_error(tmp_path):
    from modelfleet.backends.chat_template import ChatTemplate
    from modelfleet.errors import ConfigError

    (tmp_path / "t.jinja").write_text(
        "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    )
    with pytest.raises(Exception, match="user first"):
        ChatTemplate.load(tmp_path / "t.jinja").render([{"role": "system", "content": "x"}])
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no `chat_template`"):
        ChatTemplate.load(tmp_path / "tokenizer_config.json")
