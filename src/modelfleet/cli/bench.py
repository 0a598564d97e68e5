"""`modelfleet bench`: load-test any OpenAI-compatible URL."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelfleet.bench import promptset as ps
from modelfleet.bench.load import Checks, LoadPlan, run
from modelfleet.bench.metrics import SLO, summarize
from modelfleet.cli.options import run_async


@click.group()
def bench() -> None:
    """Load-test any OpenAI-compatible endpoint (modelfleet, vLLM, TGI, llama.cpp, ...)."""


@bench.command("run")
@click.option("--url", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
@click.option("--model", required=True, help="The `model` to send (a modelfleet route).")
@click.option("--promptset", "promptset_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="A promptset folder (modelfleet promptset generate) or a promptset.jsonl.")  # fmt: skip
@click.option("-n", "--requests", type=click.IntRange(1), default=100, show_default=True, help="Per sweep level.")
@click.option("-c", "--concurrency", type=click.IntRange(1), help="Clients (closed loop), or the in-flight cap.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Open loop: arrivals per second.")
@click.option("--burstiness", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Gamma shape of arrival gaps: 1 = Poisson, <1 burstier, 1e6 = constant.")  # fmt: skip
@click.option("--sweep", help="Repeat the run over levels: concurrency=1,2,4,8 or rate=5,10,20.")
@click.option("--ignore-eos", is_flag=True, help="Ask for exactly max_tokens per request (vLLM's ignore_eos).")
@click.option("--warmup", type=float, default=0.0, show_default=True, help="Seconds left out at the start.")
@click.option("--cooldown", type=float, default=0.0, show_default=True, help="Seconds left out at the end.")
@click.option("--slo", help="Goodput SLOs, e.g. ttft=500ms,tpot=50ms,e2el=10s.")
@click.option("--check-regex", help="A request passes only if its output matches this regex.")
@click.option("--check-json", is_flag=True, help="A request passes only if its output is valid JSON.")
@click.option("--check-reference", is_flag=True, help="A request passes only if it contains the prompt's reference.")
@click.option("--check-schema", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A request passes only if its output is JSON valid against this JSON Schema file.")  # fmt: skip
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token (env OPENAI_API_KEY).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for arrival times.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write results JSON here.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write a report (.html or .md).")
def run_cmd(
    url: str, model: str, promptset_path: Path, requests: int, concurrency: int | None, rate: float | None,
    burstiness: float, sweep: str | None, ignore_eos: bool, warmup: float, cooldown: float, slo: str | None,
    check_regex: str | None, check_json: bool, check_reference: bool, check_schema: Path | None,
    api_key: str | None, seed: int, out: Path | None, report: Path | None,
) -> None:  # fmt: skip
    """Send a promptset and measure TTFT, TPOT, ITL, E2E latency, throughput and goodput.

    Metrics are defined exactly as `vllm bench serve` defines them (see modelfleet.bench.metrics).

    \b
      modelfleet bench run --url http://127.0.0.1:8000/v1 --model smollm2 --promptset ./ps -c 4 -n 50
      modelfleet bench run ... --rate 20 --burstiness 0.5 --slo ttft=500ms,tpot=50ms -o run.json
      modelfleet bench run ... --sweep concurrency=1,2,4,8 --report sweep.html
    """
    try:
        parsed_slo = SLO.parse(slo)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--slo") from None
    parameter, levels = _parse_sweep(sweep)
    prompts = ps.load(promptset_path)
    base = LoadPlan(requests=requests, concurrency=concurrency if (concurrency or rate) else 1, rate=rate,
                    burstiness=burstiness, warmup=warmup, cooldown=cooldown, seed=seed,
                    ignore_eos=ignore_eos)  # fmt: skip
    schema = None
    if check_schema is not None:
        try:
            import jsonschema  # noqa: F401
        except ImportError:
            raise click.UsageError("--check-schema needs jsonschema: pip install 'modelfleet[bench]'") from None
        schema = json.loads(check_schema.read_text())
    checks = Checks(check_regex, check_json, check_reference, schema)
    console = Console(stderr=True)
    swept, all_requests, summary = [], [], {}
    for value in levels:
        plan = replace(base, **{parameter: value}) if parameter else base
        label = f"{parameter}={value}" if parameter else "bench"
        records, duration = _execute(console, label, url, model, prompts, plan, checks, api_key)
        summary = summarize(records, duration, parsed_slo)
        _print_summary(console, summary, label if parameter else None)
        all_requests += [{**r.to_dict(), "level": value} for r in records]
        if parameter:
            swept.append({"parameter": parameter, "value": value, "summary": summary})
    doc = {
        "config": {
            "url": url,
            "model": model,
            "promptset": str(promptset_path),
            **base.__dict__,
            "slo": slo,
            "sweep": sweep,
        },
        "summary": summary,
        "requests": all_requests,
    }
    if swept:
        doc["sweep"] = swept
    if out:
        out.write_text(json.dumps(doc, indent=2))
        console.print(f"results: {out}")
    if report:
        from modelfleet.bench.report import write

        console.print(f"report: {write({(out.stem if out else 'run'): doc}, report)}")
    if not any(r["status"] and r["error"] is None for r in all_requests):
        sys.exit(1)


def _parse_sweep(text: str | None) -> tuple[str | None, list]:
    if not text:
        return None, [None]
    name, _, values = text.partition("=")
    name = name.strip()
    if name not in ("concurrency", "rate") or not values:
        raise click.BadParameter("expected concurrency=1,2,4 or rate=5,10,20", param_hint="--sweep")
    cast = int if name == "concurrency" else float
    try:
        return name, [cast(v) for v in values.split(",")]
    except ValueError:
        raise click.BadParameter(f"not a list of numbers: {values!r}", param_hint="--sweep") from None


def _execute(console, label, url, model, prompts, plan, checks, api_key):
    # The progress display must not cost the measurement: rich renders on its own thread, holding the
    # GIL, so it refreshes rarely, and requests only bump integers that reach it every 0.2 s.
    with Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[errors]}"), TimeElapsedColumn(), console=console,
                  transient=True, refresh_per_second=2) as progress:  # fmt: skip
        task = progress.add_task("requests", total=plan.requests, errors="")
        done = failed = 0
        shown = time.monotonic()

        def tick(rec) -> None:
            nonlocal done, failed, shown
            done += 1
            failed += 0 if rec.ok else 1
            now = time.monotonic()
            if now - shown > 0.2 or done == plan.requests:
                shown = now
                progress.update(task, completed=done, errors=f"[red]{failed} failed[/]" if failed else "")

        return run_async(run(url, model, prompts, plan, checks=checks, api_key=api_key, on_done=tick))


@bench.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="report.html (plots embedded) or report.md (plots as PNG files beside it).")  # fmt: skip
def report_cmd(runs: tuple[Path, ...], out: Path) -> None:
    """Plot latency CDFs (one line per run, sweep level or A/B variant) and throughput against load."""
    from modelfleet.bench.report import write
    from modelfleet.errors import ModelfleetError

    try:
        click.echo(f"report: {write({p.stem: json.loads(p.read_text()) for p in runs}, out)}")
    except ModelfleetError as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)


def _print_summary(console: Console, s: dict, label: str | None = None) -> None:
    table = Table(title=f"modelfleet bench {label or ''}".strip(), show_header=True)
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


@bench.command("compare")
@click.argument("runs", nargs=-1)
@click.option("--by-variant", "variant_run", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Compare the variants (deployments) inside one run through a weighted route.")  # fmt: skip
@click.option("--judge-url", help="OpenAI-compatible URL of an LLM to judge answers pairwise.")
@click.option("--judge-model", help="The judge's model (route) name.")
@click.option("--judge-limit", type=click.IntRange(1), default=50, show_default=True, help="Prompts to judge.")
@click.option("--reps", type=click.IntRange(100), default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the comparison as JSON.")
@click.option(
    "--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Write the verdict table as Markdown."
)
def compare_cmd(
    runs: tuple[str, ...], variant_run: Path | None, judge_url: str | None, judge_model: str | None,
    judge_limit: int, reps: int, seed: int, out: Path | None, markdown: Path | None,
) -> None:  # fmt: skip
    """Compare a baseline with candidates: latency, pass rate and throughput deltas with 95% CIs.

    Each RUN is a results JSON from `bench run`; join replicates of one setup with commas.
    The first is the baseline.

    \b
      modelfleet bench compare base.json quant.json
      modelfleet bench compare b1.json,b2.json,b3.json q1.json,q2.json,q3.json   # replicates: CIs on throughput too
      modelfleet bench compare --by-variant ab.json                              # an 80/20 A/B route
      modelfleet bench compare base.json ft.json --judge-url http://127.0.0.1:8000/v1 --judge-model judge
    """
    try:
        from modelfleet.bench.compare import arms_from_runs, arms_from_variants, compare
    except ImportError as exc:
        raise click.UsageError(f"bench compare needs {exc.name}: pip install 'modelfleet[bench]'") from None

    if variant_run is not None:
        arms = arms_from_variants(json.loads(variant_run.read_text()))
    else:
        if len(runs) < 2:
            raise click.UsageError("give a baseline and at least one candidate run, or --by-variant RUN")
        docs = {arm: [json.loads(Path(p).read_text()) for p in arm.split(",")] for arm in runs}
        arms = arms_from_runs(docs)
    if len(arms) < 2:
        raise click.UsageError(f"need two arms to compare, found {[a.name for a in arms]}")
    console = Console()
    base = arms[0]
    report: dict = {"baseline": base.name, "candidates": {}}
    for cand in arms[1:]:
        rows = compare(base, cand, reps=reps, seed=seed)
        entry: dict = {"rows": rows}
        if judge_url and judge_model:
            entry["judge"] = _judge(base, cand, judge_url, judge_model, judge_limit, seed)
        report["candidates"][cand.name] = entry
        _print_verdicts(console, base.name, cand.name, rows, entry.get("judge"))
    if out:
        out.write_text(json.dumps(report, indent=2, default=float))
    if markdown:
        markdown.write_text(_markdown(report))


def _judge(base, cand, url: str, model: str, limit: int, seed: int) -> dict:
    from dataclasses import asdict

    from modelfleet.bench.judge import JudgeResult, judge

    def answers(arm) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for requests_ in arm.runs:
            for r in requests_:
                if r.get("passed") and r.get("prompt_id") and r["prompt_id"] not in found:
                    found[r["prompt_id"]] = (r.get("question") or r["prompt_id"], r.get("output") or "")
        return found

    a, b = answers(base), answers(cand)
    shared = sorted(set(a) & set(b))[:limit]
    items = [(a[p][0], a[p][1], b[p][1]) for p in shared]
    outcomes, unreadable = run_async(judge(url, model, items))
    return asdict(JudgeResult.from_outcomes(outcomes, unreadable, seed=seed))


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _print_verdicts(console: Console, base: str, cand: str, rows: list[dict], judged: dict | None) -> None:
    table = Table(title=f"{cand} vs {base} (baseline)")
    for col in ("metric", "baseline", "candidate", "delta", "95% CI", "verdict"):
        table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    colour = {"better": "green", "worse": "red"}
    for r in rows:
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        v = r["verdict"]
        table.add_row(r["metric"], _fmt(r["baseline"]), _fmt(r["candidate"]), _fmt(r["delta"]), ci,
                      f"[{colour.get(v, 'white')}]{v}[/]")  # fmt: skip
    if judged:
        ci = f"[{_fmt(judged['ci_low'])}, {_fmt(judged['ci_high'])}]"
        v = "better" if judged["ci_low"] > 0.5 else "worse" if judged["ci_high"] < 0.5 else "no clear difference"
        wtl = f"{judged['wins']}/{judged['ties']}/{judged['losses']}"
        table.add_row("judge win rate (adj.)", "0.5", _fmt(judged["win_rate_adjusted"]), f"W/T/L {wtl}", ci, v)
    console.print(table)
    console.print(f"[dim]{rows[0]['method']}; throughput: {rows[-1]['method']}[/]")


def _markdown(report: dict) -> str:
    lines = [f"# Comparison against {report['baseline']}", ""]
    for cand, entry in report["candidates"].items():
        lines += [
            f"## {cand}",
            "",
            "| metric | baseline | candidate | delta | 95% CI | verdict |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in entry["rows"]:
            lines.append(
                f"| {r['metric']} | {_fmt(r['baseline'])} | {_fmt(r['candidate'])} | {_fmt(r['delta'])} | "
                f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['verdict']} |"
            )
        if "judge" in entry:
            j = entry["judge"]
            lines.append(
                f"| judge win rate (adj.) | 0.5 | {_fmt(j['win_rate_adjusted'])} | W/T/L {j['wins']}/{j['ties']}/"
                f"{j['losses']} | [{_fmt(j['ci_low'])}, {_fmt(j['ci_high'])}] | |"
            )
        lines.append("")
    return "\n".join(lines)


@bench.command("drill")
@click.option("--only", help="Comma-separated drill names to run (default: all).")
def drill_cmd(only: str | None) -> None:
    """Run failure drills against a drill fleet and print pass or fail for each.

    The drill fleet is `modelfleet serve` with the embedded engine and fake upstreams that fail
    on purpose (slow, 5xx, dying mid-stream); it is started and stopped by this command.

    \b
    Drills: slow-engine-start, replica-killed-under-load, upstream-timeout, upstream-5xx,
            stream-dies-mid-way, quota-exceeded, strict-no-fallback
    """
    from modelfleet.bench.drills import DRILLS, Outcome, run_drills

    names = {n.strip() for n in only.split(",")} if only else None
    unknown = (names or set()) - {d[0] for d in DRILLS}
    if unknown:
        raise click.BadParameter(f"unknown drill(s) {sorted(unknown)}", param_hint="--only")
    console = Console()
    style = {"pass": "green", "fail": "red", "skipped": "yellow"}

    def show(o: Outcome) -> None:
        console.print(f"[{style[o.status]}]{o.status.upper():8}[/] [bold]{o.name}[/]: {o.expected}")
        console.print(f"         [dim]{o.detail}[/]")

    console.print("[dim]starting the drill fleet: embedded engine + failing upstreams[/]")
    outcomes = run_async(run_drills(names, show))
    failed = [o for o in outcomes if o.status == "fail"]
    passed = sum(o.status == "pass" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    console.print(f"{passed} passed, {len(failed)} failed" + (f", {skipped} skipped" if skipped else ""))
    if failed:
        sys.exit(1)
