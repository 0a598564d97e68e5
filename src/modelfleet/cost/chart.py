"""A bar chart of monthly cost per deployment: always-on against scheduled (the `bench` extra's matplotlib)."""

from __future__ import annotations

from pathlib import Path

from modelfleet.cost.model import FleetCost


def bar_chart(cost: FleetCost, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = [d for d in cost.deployments if d.hourly is not None]
    names = [f"{d.name}\n({d.team or 'no team'})" for d in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(rows) + 2), 4.5), dpi=110)
    xs = range(len(rows))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], [d.always_on_usd for d in rows], width, label="always on", color="#b0b7c3")
    ax.bar([x + width / 2 for x in xs], [d.most_usd for d in rows], width, label="scheduled", color="#2f6fde")
    lows = [d.least_usd for d in rows]
    ax.scatter([x + width / 2 for x in xs], lows, marker="_", s=400, color="#111", label="least (idle stop)", zorder=3)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel("USD per month")
    ax.set_title(f"Fleet cost {cost.start:%Y-%m} (prices as of {cost.prices.as_of})")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
