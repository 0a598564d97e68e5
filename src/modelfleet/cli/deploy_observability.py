"""`modelfleet deploy observability`: dashboards, alerts and a collector config (attached to `deploy`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelfleet.cli.options import required_fleet_file
from modelfleet.errors import ConfigError


@click.command("observability", short_help="Render the Grafana dashboard, Prometheus alerts and an OTEL collector.")
@required_fleet_file
@click.option(
    "-o",
    "--out",
    default="obs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write to.",
)
@click.option("--p95-latency", default=30.0, show_default=True, help="Alert when a route's p95 latency (s) is above.")
@click.option(
    "--errors-per-minute", default=10, show_default=True, help="Alert when a route answers more 5xx a minute."
)
@click.option("--slow-wake", type=float, help="Alert when waking takes longer (s). Default: the longest wake_timeout.")
@click.option(
    "--traces-to",
    "backend",
    type=click.Choice(["tempo", "jaeger"]),
    default="tempo",
    show_default=True,
    help="Where the collector sends traces.",
)
@click.option("--traces-endpoint", help="Its OTLP/gRPC address. Default: tempo:4317 or jaeger-collector:4317.")
@click.option("--scrape-target", help="The gateway as Prometheus reaches it. Default: server.host:server.port.")
@click.option("--job", default="modelfleet", show_default=True, help="Prometheus job name of the gateway.")
def observability(fleet_path: Path, out: Path, p95_latency: float, errors_per_minute: int, slow_wake: float | None,
                  backend: str, traces_endpoint: str | None, scrape_target: str | None, job: str) -> None:  # fmt: skip
    """Render what watches the fleet: a Grafana dashboard, Prometheus alert rules and scrape config, and an
    OpenTelemetry Collector config.

    \b
      grafana/modelfleet.json     fleet overview; latency, TTFT, TPOT, tokens/s per route and team;
                                  A/B variants side by side; deployments and replicas (state, wakes,
                                  schedule, engine queue and KV cache); limits and budgets
      prometheus/alerts.yaml      unhealthy replicas, p95 latency, 5xx rate, budget burn, failed or slow
                                  wakes, a deployment down inside its schedule, ... (promtool check rules)
      prometheus/prometheus.yml   scrapes the gateway's /metrics and loads the alerts
      otel-collector.yaml         receives OTLP (the gateway, vLLM) and sends traces to Tempo or Jaeger

    Point the gateway at the collector with `observability: {otlp_endpoint: http://otel-collector:4318}`.

    \b
    Example:
      modelfleet deploy observability -f fleet.yaml -o obs/
      promtool check rules obs/prometheus/alerts.yaml
    """
    from modelfleet.deploy import observability as render

    try:
        fleet = render.read(fleet_path)
    except ConfigError as exc:
        click.echo(click.style("config error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    opts = render.Options(
        p95_latency_seconds=p95_latency, errors_per_minute=errors_per_minute, slow_wake_seconds=slow_wake,
        traces_backend=backend, traces_endpoint=traces_endpoint, scrape_target=scrape_target, job=job,
    )  # fmt: skip
    rendered = render.render(fleet, opts)
    files = render.write(rendered, out)
    n_alerts = len(render.alerts(render.thresholds(fleet, opts)))
    click.echo(
        f"wrote {len(files)} files to {out}/ (a dashboard of {len(render.queries())} queries, {n_alerts} alerts)"
    )
    key_step = ""
    if "authorization" in rendered["prometheus/prometheus.yml"]:
        key_step = (f"  put auth.metrics_key's value in {out}/prometheus/{render.METRICS_KEY_FILE} "
                    "(with teams, /metrics needs it)\n")  # fmt: skip
    click.echo(
        f"\nNext:\n{key_step}  promtool check rules {out}/prometheus/alerts.yaml\n"
        f"  prometheus --config.file={out}/prometheus/prometheus.yml\n"
        f"  import {out}/grafana/modelfleet.json in Grafana (Dashboards > New > Import)"
    )
