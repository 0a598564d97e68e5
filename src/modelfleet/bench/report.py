"""Reports from bench results: latency CDFs, throughput against concurrency, summary tables.

HTML embeds its plots; Markdown writes them as PNG files beside it. Plots need matplotlib
(`pip install 'modelfleet[bench]'`).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from modelfleet.errors import ModelfleetError

METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency"))


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ModelfleetError("plots need matplotlib: pip install 'modelfleet[bench]'") from None
    return plt


def series(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Lines to draw: one per sweep level, else one per variant when a run has several, else the run."""
    reqs = [r for r in doc["requests"] if r.get("error") is None and 200 <= (r.get("status") or 0) < 300]
    if doc.get("sweep"):
        return {
            f"{s['parameter']}={s['value']}": [r for r in reqs if r.get("level") == s["value"]] for s in doc["sweep"]
        }
    variants = {r.get("variant") for r in reqs}
    if len(variants) > 1:
        return {str(v): [r for r in reqs if r.get("variant") == v] for v in sorted(variants, key=str)}
    return {"run": reqs}


def cdf_figure(runs: dict[str, dict[str, Any]]) -> bytes:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4), constrained_layout=True)
    for ax, (key, title) in zip(axes, METRICS, strict=True):
        for run_name, doc in runs.items():
            for line_name, reqs in series(doc).items():
                if key == "itl":
                    values = sorted(g * 1000 for r in reqs for g in r.get("itl") or [])
                else:
                    values = sorted(r[key] * 1000 for r in reqs if r.get(key) is not None)
                if values:
                    ys = [(i + 1) / len(values) for i in range(len(values))]
                    label = line_name if len(runs) == 1 else f"{run_name} {line_name}".replace(" run", "")
                    ax.step(values, ys, where="post", label=label)
        lo, hi = ax.dataLim.x0, ax.dataLim.x1
        if lo > 0 and hi / lo > 10:  # latencies often span decades
            ax.set_xscale("log")
        ax.set_title(f"{title} CDF")
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig, plt)


def sweep_figure(runs: dict[str, dict[str, Any]]) -> bytes | None:
    swept = {n: d for n, d in runs.items() if d.get("sweep")}
    if not swept:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for name, doc in swept.items():
        levels = [s["value"] for s in doc["sweep"]]
        parameter = doc["sweep"][0]["parameter"]
        left.plot(levels, [s["summary"]["output_token_throughput"] for s in doc["sweep"]], marker="o", label=name)
        for q, style in (("p50", "-"), ("p90", "--")):
            ttft = [(s["summary"]["ttft_s"] or {}).get(q, float("nan")) * 1000 for s in doc["sweep"]]
            right.plot(levels, ttft, style, marker="o", label=f"{name} TTFT {q}")
        left.set_xlabel(parameter)
        right.set_xlabel(parameter)
    left.set_title("output throughput")
    left.set_ylabel("tokens/s")
    right.set_title("time to first token")
    right.set_ylabel("ms")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig, plt)


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def summary_rows(runs: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [["run", "requests", "pass rate", "req/s", "output tok/s", "TTFT p50 ms", "TPOT p50 ms", "E2E p90 ms"]]
    for name, doc in runs.items():
        levels = doc.get("sweep") or [{"parameter": "", "value": "", "summary": doc["summary"]}]
        for level in levels:
            s = level["summary"]
            label = f"{name} {level['parameter']}={level['value']}" if level["parameter"] else name
            rows.append(
                [
                    label, str(s["requests"]), f"{s['pass_rate']:.1%}", f"{s['request_throughput']:.2f}",
                    f"{s['output_token_throughput']:.1f}", _ms(s["ttft_s"], "p50"), _ms(s["tpot_s"], "p50"),
                    _ms(s["e2el_s"], "p90"),
                ]
            )  # fmt: skip
    return rows


def _ms(dist: dict | None, key: str) -> str:
    return f"{dist[key] * 1000:.1f}" if dist else "-"


def write(runs: dict[str, dict[str, Any]], out: Path) -> Path:
    figures = {"latency-cdf": cdf_figure(runs)}
    if (sweep := sweep_figure(runs)) is not None:
        figures["sweep"] = sweep
    rows = summary_rows(runs)
    if out.suffix.lower() in (".md", ".markdown"):
        assets = out.with_suffix("")
        assets = assets.parent / f"{assets.name}-files"
        assets.mkdir(parents=True, exist_ok=True)
        lines = ["# modelfleet bench report", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        for name, png in figures.items():
            (assets / f"{name}.png").write_bytes(png)
            lines += ["", f"![{name}]({assets.name}/{name}.png)"]
        out.write_text("\n".join(lines) + "\n")
        return out
    table = "".join(
        "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )  # fmt: skip
    images = "".join(
        f'<h2>{html.escape(name)}</h2><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in figures.items()
    )
    out.write_text(
        "<!doctype html><meta charset=utf-8><title>modelfleet bench report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style>"
        f"<h1>modelfleet bench report</h1><table>{table}</table>{images}"
    )
    return out
