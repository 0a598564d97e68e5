"""`modelfleet deployments`: status, start and stop, through a running gateway's admin API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import click

from modelfleet.cli.common import fail, table
from modelfleet.config.schema import _parse_duration

url_option = click.option("--url", envvar="MODELFLEET_URL", default="http://127.0.0.1:8000", show_default=True,
                          help="The gateway (env MODELFLEET_URL).")  # fmt: skip
key_option = click.option("--admin-key", envvar="MODELFLEET_ADMIN_KEY",
                          help="auth.admin_key (env MODELFLEET_ADMIN_KEY).")  # fmt: skip


def _call(url: str, key: str | None, method: str, path: str) -> Any:
    auth = {"Authorization": f"Bearer {key or ''}"}
    req = urllib.request.Request(url.rstrip("/") + path, method=method, headers=auth)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        fail(f"{method} {path}: HTTP {exc.code}: {message}")
    except OSError as exc:
        fail(f"cannot reach the gateway at {url}: {exc}; is `modelfleet serve` running? (--url)")


@click.group()
def deployments() -> None:
    """See and change what runs: start and stop deployments, wherever they run.

    \b
      modelfleet deployments status
      modelfleet deployments stop llama        # engines stop; a SageMaker endpoint is deleted
      modelfleet deployments start llama       # and waits, with progress, until it serves

    A start or stop lasts until the deployment's next schedule boundary. These commands talk to
    the gateway's admin API: set --url and --admin-key (or MODELFLEET_URL, MODELFLEET_ADMIN_KEY).
    """


@deployments.command()
@url_option
@key_option
@click.option("--json", "as_json", is_flag=True)
def status(url: str, admin_key: str | None, as_json: bool) -> None:
    """Desired and observed state of every deployment."""
    rows = _call(url, admin_key, "GET", "/admin/deployments")["data"]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        r["replicas"] = " ".join(f"{x['name']}={x['state']}" for x in r["replicas"])
        r["schedule"] = f"{r['schedule']['window']} until {r['schedule']['until'][:16]}" if r["schedule"] else ""
    table(rows, ["name", "kind", "desired", "observed", "replicas", "reason", "schedule", "wakes"])


def _verb(verb: str, name: str, url: str, admin_key: str | None, wait: bool, timeout: str) -> None:
    done = _call(url, admin_key, "POST", f"/admin/deployments/{name}/{verb}")
    click.echo(f"{name}: desired {done['desired']} ({done['reason']})")
    if not wait:
        return
    goal = "running" if verb == "start" else "stopped"
    limit = _parse_duration(timeout)
    started = time.monotonic()
    from rich.console import Console

    with Console(stderr=True).status(f"waiting for {name} to be {goal}") as spinner:
        while True:
            row = next(r for r in _call(url, admin_key, "GET", "/admin/deployments")["data"] if r["name"] == name)
            took = time.monotonic() - started
            if row["observed"] == goal:
                break
            if took > limit:
                fail(f"{name} is {row['observed']} after {took:.0f}s, not {goal}; see: modelfleet deployments status")
            reasons = ", ".join(sorted({x["reason"] for x in row["replicas"]}))
            spinner.update(f"{name}: {row['observed']} ({reasons}) {took:.0f}s")
            time.sleep(0.5)
    click.echo(f"{name}: {goal} after {time.monotonic() - started:.1f}s")


@deployments.command()
@click.argument("name")
@url_option
@key_option
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until it serves.")
@click.option("--timeout", default="30m", show_default=True, help="How long to wait.")
def start(name: str, url: str, admin_key: str | None, wait: bool, timeout: str) -> None:
    """Start a deployment (engines, or create the SageMaker endpoint) and wait until it serves."""
    _verb("start", name, url, admin_key, wait, timeout)


@deployments.command()
@click.argument("name")
@url_option
@key_option
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", default="30m", show_default=True)
def stop(name: str, url: str, admin_key: str | None, wait: bool, timeout: str) -> None:
    """Stop a deployment (engines exit; a SageMaker endpoint is deleted, its model and config kept)."""
    _verb("stop", name, url, admin_key, wait, timeout)
