"""`modelfleet bench`: load-test any OpenAI-compatible URL."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelfleet.bench import promptset as ps
from modelfleet.bench.load import Checks, LoadPlan, run
from modelfleet.bench.metrics import SLO, summarize


@click.group()
def bench() -> None:
    """Load-test any OpenAI-compatible endpoint (modelfleet, vLLM, TGI, llama.cpp, ...)."""


@bench.command("run")
@click.option("--url", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
@click.option("--model", required=True, help="The `model` to send (a modelfleet route).")
@click.option("--promptset", "promptset_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="A promptset folder (modelfleet promptset generate) or a promptset.jsonl.")  # fmt: skip
@click.option("-n", "--requests", type=click.IntRange(1), default=100, show_default=True)
@click.option("-c", "--concurrency", type=click.IntRange(1), help="Clients (closed loop), or the in-flight cap.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Open loop: arrivals per second.")
@click.option("--burstiness", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Gamma shape of arrival gaps: 1 = Poisson, <1 burstier, 1e6 = constant.")  # fmt: skip
@click.option("--warmup", type=float, default=0.0, show_default=True, help="Seconds left out at the start.")
@click.option("--cooldown", type=float, default=0.0, show_default=True, help="Seconds left out at the end.")
@click.option("--slo", help="Goodput SLOs, e.g. ttft=500ms,tpot=50ms,e2el=10s.")
@click.option("--check-regex", help="A request passes only if its output matches this regex.")
@click.option("--check-json", is_flag=True, help="A request passes only if its output is valid JSON.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token (env OPENAI_API_KEY).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for arrival times.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write results JSON here.")
def run_cmd(
    url: str, model: str, promptset_path: Path, requests: int, concurrency: int | None, rate: float | None,
    burstiness: float, warmup: float, cooldown: float, slo: str | None, check_regex: str | None,
    check_json: bool, api_key: str | None, seed: int, out: Path | None,
) -> None:  # fmt: skip
    """Send a promptset and measure TTFT, TPOT, ITL, E2E latency, throughput and goodput.

    Metrics are defined exactly as `vllm bench serve` defines them (see modelfleet.bench.metrics).

    \b
      modelfleet bench run --url http://127.0.0.1:8000/v1 --model smollm2 --promptset ./ps -c 4 -n 50
      modelfleet bench run ... --rate 20 --burstiness 0.5 --slo ttft=500ms,tpot=50ms -o run.json
    """
    try:
        parsed_slo = SLO.parse(slo)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--slo") from None
    prompts = ps.load(promptset_path)
    plan = LoadPlan(requests=requests, concurrency=concurrency if (concurrency or rate) else 1, rate=rate,
                    burstiness=burstiness, warmup=warmup, cooldown=cooldown, seed=seed)  # fmt: skip
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[errors]}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:  # fmt: skip
        task = progress.add_task("requests", total=requests, errors="")
        failed = 0

        def tick(rec) -> None:
            nonlocal failed
            failed += 0 if rec.ok else 1
            progress.update(task, advance=1, errors=f"[red]{failed} failed[/]" if failed else "")

        records, duration = asyncio.run(
            run(url, model, prompts, plan, checks=Checks(check_regex, check_json), api_key=api_key, on_done=tick)
        )
    summary = summarize(records, duration, parsed_slo)
    _print_summary(console, summary)
    if out:
        doc = {
            "config": {"url": url, "model": model, "promptset": str(promptset_path), **plan.__dict__, "slo": slo},
            "summary": summary,
            "requests": [r.to_dict() for r in records],
        }
        out.write_text(json.dumps(doc, indent=2))
        console.print(f"results: {out}")
    if summary["completed"] == 0:
        sys.exit(1)


def _print_summary(console: Console, s: dict) -> None:
    table = Table(title="modelfleet bench", show_header=True)
    table.add_column("metric")
    for col in ("mean", "p50", "p90", "p99"):
        table.add_column(col, justify="right")
    for name in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        d = s.get(name)
        if d:
            table.add_row(
                name.removesuffix("_s").upper() + " (ms)",
                *(f"{d[k] * 1000:.2f}" for k in ("mean", "p50", "p90", "p99")),
            )
    console.print(table)
    line = (
        f"{s['completed']}/{s['requests']} completed, pass rate {s['pass_rate']:.1%}, "
        f"{s['request_throughput']:.2f} req/s, {s['output_token_throughput']:.1f} output tok/s"
    )
    if "goodput" in s:
        line += f", goodput {s['goodput']:.2f} req/s ({s['slo_attainment']:.1%} within SLO)"
    if s.get("usage_from_server") is False:
        line += " [yellow](no server usage: tokens counted locally)[/]"
    console.print(line)
