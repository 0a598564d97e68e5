"""Bench building blocks: reproducible promptsets, and load-test metrics as vLLM defines them."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import PY, bench_run

from modelfleet.bench import promptset as ps
from modelfleet.bench.metrics import SLO, RequestRecord, apply_timeline, summarize


def generate(tmp_path, *args):
    return subprocess.run([PY, "-m", "modelfleet", "promptset", "generate", *args, "-o", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip


def test_same_seed_same_bytes_and_checksum(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, "7"), (b, "7"), (c, "8")):
        done = generate(out, "--packs", "general-qa,summarization,code,extraction", "-n", "40", "--seed", seed)
        assert done.returncode == 0, done.stderr
    assert (a / "promptset.jsonl").read_bytes() == (b / "promptset.jsonl").read_bytes()
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    assert (a / "promptset.jsonl").read_bytes() != (c / "promptset.jsonl").read_bytes()
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["count"] == 40 and manifest["seed"] == 7
    assert set(manifest["categories"]) <= {"general-qa", "summarization", "code", "extraction"}
    assert manifest["prompt_tokens"]["total"] == sum(manifest["prompt_tokens"]["per_prompt"].values()) > 0
    assert manifest["tokenizer"]["name"] and len(manifest["tokenizer"]["sha256"]) == 64
    rows = ps.load(a)
    assert len(rows) == 40 and all(r["messages"][0]["role"] == "user" and r["max_tokens"] > 0 for r in rows)


def test_verify_catches_an_edited_promptset(tmp_path):
    assert generate(tmp_path, "--packs", "code", "-n", "5").returncode == 0
    ok = subprocess.run([PY, "-m", "modelfleet", "promptset", "verify", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout
    path = tmp_path / "promptset.jsonl"
    path.write_text(path.read_text().replace("a", "b", 1))
    bad = subprocess.run([PY, "-m", "modelfleet", "promptset", "verify", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "does not match the manifest" in bad.stderr


def test_prompts_from_a_csv_file(tmp_path):
    src = tmp_path / "mine.csv"
    src.write_text('prompt,category\n"Hello, who are you?",greeting\nName three rivers,geo\n')
    done = generate(tmp_path / "out", "--from", str(src), "-n", "5")
    assert done.returncode == 0, done.stderr
    rows = ps.load(tmp_path / "out")
    assert len(rows) == 5 and {r["category"] for r in rows} == {"greeting", "geo"}


def test_unknown_pack_is_a_clear_error(tmp_path):
    done = generate(tmp_path, "--packs", "poetry")
    assert done.returncode == 2 and "no pack named 'poetry'" in done.stderr and "general-qa" in done.stderr


def chunk(content: str | None = "x", usage: dict | None = None) -> dict:
    msg: dict = {"choices": [] if content is None else [{"index": 0, "delta": {"content": content}}]}
    if usage:
        msg["usage"] = usage
    return msg


def test_metrics_follow_vllm_definitions_on_a_hand_built_timeline():
    # Sent at t=10.0; role chunk at 10.2 (counts for TTFT, as in vLLM); tokens at 10.3, 10.5, 10.6;
    # usage-only chunk at 10.9 (excluded from E2EL).
    rec = RequestRecord(id="r", start=0.0, status=200)
    events = [(10.2, chunk("")), (10.3, chunk("a")), (10.5, chunk("b")), (10.6, chunk("c")),
              (10.9, chunk(None, {"prompt_tokens": 7, "completion_tokens": 4}))]  # fmt: skip
    apply_timeline(rec, 10.0, events)
    assert rec.ttft == pytest.approx(0.2)
    assert rec.e2el == pytest.approx(0.6)
    assert rec.itl == pytest.approx([0.1, 0.2, 0.1])
    assert rec.output_tokens == 4 and rec.prompt_tokens == 7 and rec.usage_from_server
    assert rec.tpot == pytest.approx((0.6 - 0.2) / 3)


def test_without_server_usage_tokens_are_counted_locally_and_flagged():
    rec = RequestRecord(id="r", start=0.0, status=200)
    apply_timeline(rec, 0.0, [(0.1, chunk("")), (0.2, chunk("a")), (0.3, chunk("b"))])
    assert rec.output_tokens == 2 and not rec.usage_from_server


def test_summary_throughput_goodput_and_percentiles():
    recs = []
    for i, ttft in enumerate([0.1, 0.2, 0.3, 0.4, 2.0]):
        r = RequestRecord(id=str(i), start=i, status=200, ttft=ttft, e2el=ttft + 1.0, output_tokens=11, passed=True)
        recs.append(r)
    recs.append(RequestRecord(id="bad", start=5, status=500, error="HTTP 500"))
    s = summarize(recs, duration=10.0, slo=SLO.parse("ttft=500ms,tpot=150ms"))
    assert s["completed"] == 5 and s["failed"] == 1
    assert s["request_throughput"] == pytest.approx(0.5)
    assert s["output_token_throughput"] == pytest.approx(5.5)
    assert s["ttft_s"]["p50"] == pytest.approx(0.3)
    assert s["ttft_s"]["p90"] == pytest.approx(0.4 + 0.6 * 1.6)  # linear interpolation, like numpy
    assert s["goodput"] == pytest.approx(0.4)  # 4 of 6 meet ttft <= 0.5 s and tpot = 0.1 s
    assert s["pass_rate"] == pytest.approx(5 / 6)


def test_slo_parsing():
    assert SLO.parse("ttft=500ms,tpot=50,e2el=2s") == SLO(ttft=0.5, tpot=0.05, e2el=2.0)
    with pytest.raises(ValueError, match="unknown SLO"):
        SLO.parse("latency=1s")


def test_known_delays_are_measured(tmp_path, start):
    from conftest import Upstream

    # First byte after 200 ms, then 6 chunks 50 ms apart (the first is the role chunk).
    up = start(Upstream, "--delay", "0.2", "--chunks", "6", "--chunk-delay", "0.05")
    doc = bench_run(tmp_path, up.url, "m", "-n", "8", "-c", "4", "--slo", "ttft=400ms")
    s = doc["summary"]
    assert s["completed"] == 8 and s["pass_rate"] == 1.0 and s["usage_from_server"] is True
    assert 0.2 <= s["ttft_s"]["p50"] < 0.26
    assert 0.045 <= s["itl_s"]["p50"] < 0.07
    assert s["goodput"] > 0 and s["slo_attainment"] == 1.0
    rec = doc["requests"][0]
    assert rec["output_tokens"] == 5 and len(rec["itl"]) == 5
    assert rec["tpot"] == pytest.approx((rec["e2el"] - rec["ttft"]) / 4)


def test_open_loop_poisson_and_failures_are_counted(tmp_path, start):
    from conftest import Upstream

    up = start(Upstream, "--status", "500")
    out = tmp_path / "ps"
    assert generate(out, "--packs", "code", "-n", "5").returncode == 0
    done = subprocess.run(
        [PY, "-m", "modelfleet", "bench", "run", "--url", up.url, "--model", "m", "--promptset", str(out),
         "-n", "10", "--rate", "50", "-o", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1  # nothing completed
    s = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert s["failed"] == 10 and s["pass_rate"] == 0.0


@pytest.mark.slow
def test_short_run_against_the_real_engine(tmp_path, start):
    from conftest import Gateway

    gw = start(Gateway, None)
    doc = bench_run(tmp_path, gw.url, "smollm2", "-n", "4", "-c", "2")
    s = doc["summary"]
    assert s["completed"] == 4 and s["usage_from_server"] is True and s["output_token_throughput"] > 0
    assert s["ttft_s"]["p50"] > 0 and s["tpot_s"]["p50"] > 0
    assert {r["variant"] for r in doc["requests"]} == {"smollm2"}


def test_sweep_and_reports(tmp_path, start):
    from conftest import Upstream

    up = start(Upstream, "--delay", "0.005", "--chunks", "4")
    doc = bench_run(tmp_path, up.url, "m", "-n", "20", "--sweep", "concurrency=1,4", "--report",
                    str(tmp_path / "r.html"))  # fmt: skip
    assert [s["value"] for s in doc["sweep"]] == [1, 4]
    assert all(s["summary"]["completed"] == 20 for s in doc["sweep"])
    assert sorted({r["level"] for r in doc["requests"]}) == [1, 4]
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "concurrency=4" in page
    (tmp_path / "run.json").write_text(json.dumps(doc))
    done = subprocess.run([PY, "-m", "modelfleet", "bench", "report", str(tmp_path / "run.json"), "-o",
                           str(tmp_path / "r.md")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r-files" / "latency-cdf.png").stat().st_size > 10_000
    assert "![sweep](r-files/sweep.png)" in (tmp_path / "r.md").read_text()


@pytest.mark.slow
def test_drills_pass_against_the_embedded_fleet():
    done = subprocess.run([PY, "-m", "modelfleet", "bench", "drill"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())  # rich wraps long lines
    assert "8 passed, 0 failed" in out and "skipped" not in out
    for drill in ("replica-killed-under-load", "quota-exceeded", "strict-no-fallback", "replica-failover"):
        assert f"PASS {drill}" in out


def test_checks_decide_the_pass_rate(tmp_path, start):
    from conftest import Upstream

    up = start(Upstream, "--chunks", "4")  # streams "tok tok tok"
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "required": ["name"]}')
    by_regex = bench_run(tmp_path, up.url, "m", "-n", "5", "--check-regex", r"^(tok ?)+$")
    assert by_regex["summary"]["pass_rate"] == 1.0
    by_schema = bench_run(tmp_path, up.url, "m", "-n", "5", "--check-schema", str(schema), "--slo", "e2el=10s")
    s = by_schema["summary"]
    assert s["completed"] == 5 and s["pass_rate"] == 0.0 and s["goodput"] == 0.0  # served, but not valid output
