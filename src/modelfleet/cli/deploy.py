"""`modelfleet deploy`: put the fleet into an account. `aws` renders Terraform from the fleet file;
plan, apply, destroy and check run terraform in the rendered folder, with progress."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import click

from modelfleet.cli.common import fail
from modelfleet.cli.deploy_ci import ci
from modelfleet.cli.deploy_k8s import k8s
from modelfleet.cli.deploy_observability import observability
from modelfleet.cli.options import required_fleet_file

folder_option = click.option(
    "-C",
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("infra"),
    show_default=True,
    help="The rendered folder (the -o of `modelfleet deploy aws`).",
)
plugin_dir_option = click.option(
    "--plugin-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="MODELFLEET_TF_PLUGIN_DIR",
    help="Install providers from this local mirror instead of the registry (offline machines). "
    "Env: MODELFLEET_TF_PLUGIN_DIR.",
)
approve_option = click.option("--auto-approve", "-y", is_flag=True, help="Do not ask before changing the account.")


@click.group()
def deploy() -> None:
    """Put the fleet into a cloud account: render infrastructure from the fleet file, then apply it.

    \b
      modelfleet deploy aws -f fleet.yaml -o infra/   render Terraform from the fleet's `deploy:` section
      modelfleet deploy check -C infra/               terraform fmt -check + validate (offline)
      modelfleet deploy plan  -C infra/               terraform init + plan, saved as infra/tfplan
      modelfleet deploy apply -C infra/               apply the saved plan (or plan, ask, apply)
      modelfleet deploy destroy -C infra/             delete everything the folder created
      modelfleet deploy k8s -f fleet.yaml -o k8s/     a Kustomize tree (base + dev/staging/prod overlays)
      modelfleet deploy ci -f fleet.yaml -o .         a CI pipeline: fmt, validate, plan, policy, apply
      modelfleet deploy observability -f fleet.yaml -o obs/
                                                      Grafana dashboard, Prometheus alerts, OTEL collector

    The rendered folder is plain Terraform with a README.md: read it, diff it, commit it. Rendering
    needs no network and no secret; plan/apply use your usual AWS credentials (AWS_PROFILE, ...).
    """


@deploy.command()
@required_fleet_file
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("infra"),
    show_default=True,
    help="The folder to render into (created; files modelfleet wrote are replaced).",
)
def aws(fleet_path: Path, out: Path) -> None:
    """Render a Terraform root module for AWS from the fleet file.

    \b
    The fleet file's `deploy:` section says where and how:
      deploy:
        name: office-hours            prefix of every resource name
        region: eu-central-1
        gateway: none                 none: the gateway runs elsewhere; behind an ALB: ec2 (an
                                      Auto Scaling group) or ecs-fargate (an ECS service)
        certificate_arn: arn:aws:acm:...   (ec2, ecs-fargate) the ALB's TLS certificate
        ec2: {count: 2, instance_type: t3.small}      fargate: {count: 2, cpu: 512, memory: 1024}
        network: {vpc_id: vpc-..., subnet_ids: [subnet-..., subnet-...]}   default: a new VPC
        alarms: {emails: [oncall@example.com]}
        state_backend: {s3_bucket: my-tf-state}                           default: local state
        tags: {cost_center: cc-42}

    \b
    What you get: each SageMaker deployment's role (least privilege), HF-token secret (no value:
    you set it out of band), model and endpoint config named as `modelfleet deployments` names
    them, and alarms; schedules as EventBridge Scheduler + a small Lambda when the gateway is not in
    AWS; with a gateway in AWS, the ALB, the Auto Scaling group or ECS service, the fleet file in
    SSM, and Redis + PostgreSQL for more than one gateway. The same fleet file always renders the same bytes.
    """
    from modelfleet.deploy import aws as aws_renderer
    from modelfleet.deploy import files, source
    from modelfleet.errors import ConfigError
    from modelfleet.policy import PolicyError, enforce

    try:
        fleet, raw, _ = source.load(fleet_path)
        enforce(fleet)  # a fleet that breaks its own policy is not rendered (its plan is checked in CI)
        rendered = aws_renderer.render(fleet, raw, source=fleet_path.name)
    except PolicyError as exc:
        click.echo(click.style("policy: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(1)
    except ConfigError as exc:
        click.echo(click.style("config error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    except aws_renderer.DeployError as exc:
        problems = "\n".join(f"  {p}" for p in exc.problems)
        click.echo(click.style("config error: ", fg="red", bold=True) + f"{fleet_path}:\n{problems}", err=True)
        sys.exit(2)
    for warning in aws_renderer.warnings(fleet):
        click.echo(click.style("warning: ", fg="yellow", bold=True) + f"{fleet_path}: {warning}", err=True)
    changed = files.write(rendered, out)
    click.echo(f"rendered {len(rendered)} files into {out}/ ({len(changed)} changed)")
    for name in changed:
        click.echo(f"  {name}")
    if changed and (out / "tfplan").exists():  # `deploy apply` would apply the old files' plan
        (out / "tfplan").unlink()
        click.echo(f"removed {out}/tfplan: it was planned from the files before this render")
    click.echo(f"next: read {out}/README.md, then `modelfleet deploy plan -C {out}`")


def terraform_binary() -> str:
    found = os.environ.get("MODELFLEET_TERRAFORM") or shutil.which("terraform")
    if not found:
        fail(
            "terraform is not installed (or not on PATH). Install Terraform >= 1.5 "
            "(https://developer.hashicorp.com/terraform/install),\n"
            "or set MODELFLEET_TERRAFORM to its path."
        )
    return found  # type: ignore[return-value]


def _rendered(folder: Path) -> None:
    if not (folder / "versions.tf").is_file():
        fail(f"{folder}/ has no rendered module; render one with `modelfleet deploy aws -f fleet.yaml -o {folder}`")


_STEP = re.compile(
    r"^(\S+): (Creating|Still creating|Creation complete|Destroying|Still destroying|"
    r"Destruction complete|Modifying|Modifications complete|Refreshing state|Reading)"
)


def run_terraform(folder: Path, title: str, *args: str) -> str:
    """One terraform command with a live status line; its output is shown in full only when it fails."""
    from rich.console import Console

    console = Console(stderr=True)
    command, *rest = args
    flags = ["-no-color", *(["-input=false"] if command in ("init", "plan", "apply", "destroy") else [])]
    argv = [terraform_binary(), f"-chdir={folder}", command, *flags, *rest]  # flags before a saved plan's name
    tail: deque[str] = deque(maxlen=40)
    lines: list[str] = []
    started = time.monotonic()
    env = {**os.environ, "TF_IN_AUTOMATION": "1"}
    with console.status(f"{title} ...") as status:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None

        def follow() -> int:
            for line in proc.stdout:  # type: ignore[union-attr]
                line = line.rstrip()
                tail.append(line)
                lines.append(line)
                if _STEP.match(line) or line.startswith(("Plan:", "Apply complete", "Destroy complete")):
                    status.update(f"{title} ({time.monotonic() - started:.0f}s): {line[:100]}")
            return proc.wait()

        # terraform gets the same Ctrl-C: it lets the calls in flight finish and saves its state. Leaving then
        # would close its output pipe and could kill it before it writes what it created, so a Ctrl-C is only
        # noted here (a KeyboardInterrupt raised mid-read could also lose the lines terraform prints then).
        interrupted: list[bool] = []

        def on_ctrl_c(*_: object) -> None:
            interrupted.append(True)
            status.update(f"{title}: interrupted; terraform is finishing the calls in flight and saving its state")

        previous = signal.signal(signal.SIGINT, on_ctrl_c)
        try:
            code = follow()
        finally:
            signal.signal(signal.SIGINT, previous)
        if interrupted:
            console.print("\n".join(tail), markup=False, highlight=False)
            fail(
                f"{title} interrupted after {time.monotonic() - started:.0f}s (terraform exited {code}); "
                "its state holds what it created: run the same command again to finish, or destroy"
            )
    elapsed = time.monotonic() - started
    if code != 0:
        console.print("\n".join(tail), markup=False, highlight=False)
        fail(f"{title} failed (terraform exited {code}) after {elapsed:.0f}s; its output is above")
    summary = next(
        (
            x
            for x in reversed(lines)
            if x.startswith(("Plan:", "Apply complete", "Destroy complete", "No changes", "Success"))
        ),
        "done",
    )
    console.print(f"[green]✓[/green] {title} ({elapsed:.0f}s): {summary}", highlight=False, soft_wrap=True)
    return "\n".join(lines)


def _init(folder: Path, plugin_dir: Path | None, backend: bool = True) -> None:
    args = ["init", "-upgrade=false"]
    if plugin_dir:
        args.append(f"-plugin-dir={plugin_dir.resolve()}")
    if not backend:
        args.append("-backend=false")
    run_terraform(folder, "terraform init", *args)


@deploy.command()
@folder_option
@plugin_dir_option
def check(folder: Path, plugin_dir: Path | None) -> None:
    """terraform fmt -check and validate: offline, no AWS credentials needed.

    \b
      modelfleet deploy check -C infra/ --plugin-dir /opt/tf-plugins   (CI, no network)
    """
    _rendered(folder)
    run_terraform(folder, "terraform fmt -check", "fmt", "-check", "-diff", "-recursive")
    _init(folder, plugin_dir, backend=False)
    run_terraform(folder, "terraform validate", "validate")


@deploy.command()
@folder_option
@plugin_dir_option
def plan(folder: Path, plugin_dir: Path | None) -> None:
    """terraform init + plan; the plan is saved as tfplan for `deploy apply`.

    Uses your usual AWS credentials (AWS_PROFILE, AWS_REGION, ...). Re-rendering the folder with
    changes removes the saved plan, so `deploy apply` never applies a plan of older files.
    """
    _rendered(folder)
    _init(folder, plugin_dir)
    run_terraform(folder, "terraform plan", "plan", "-out=tfplan")
    click.echo(f"saved the plan as {folder}/tfplan; apply it with `modelfleet deploy apply -C {folder}`")


@deploy.command()
@folder_option
@plugin_dir_option
@approve_option
def apply(folder: Path, plugin_dir: Path | None, auto_approve: bool) -> None:
    """Apply the plan saved by `deploy plan`; without one, plan, ask, then apply.

    A saved plan is used once: it is removed after the apply, whether it succeeded or not. Applying
    an unchanged folder again changes nothing. Ctrl-C lets terraform finish the calls in flight and
    save its state; run the same command again to finish.
    """
    _rendered(folder)
    _init(folder, plugin_dir)
    saved = folder / "tfplan"
    if not saved.exists():
        click.echo(run_terraform(folder, "terraform plan", "plan", "-out=tfplan").split("\n\n")[-1][-2000:])
        if not auto_approve:
            click.confirm("apply this plan?", abort=True)
    try:
        run_terraform(folder, "terraform apply", "apply", "tfplan")
    finally:
        saved.unlink(missing_ok=True)  # a plan is stale once applied, even in part: terraform refuses it again


@deploy.command()
@folder_option
@plugin_dir_option
@approve_option
def destroy(folder: Path, plugin_dir: Path | None, auto_approve: bool) -> None:
    """Delete everything the rendered folder created (secrets wait out their 7-day recovery window).

    Only what the folder's Terraform state holds is deleted: endpoints the control plane or the
    schedule Lambda started are not in it; stop them first (`modelfleet deployments stop NAME`).
    Within the recovery window a new apply cannot reuse a secret's name: restore it with
    `aws secretsmanager restore-secret --secret-id NAME`, then `terraform import` it, or wait.
    """
    _rendered(folder)
    _init(folder, plugin_dir)
    others = _endpoints_not_in_state(folder)
    if others:  # they would outlive their role, model and alarms, and keep costing
        click.echo(
            "destroy does not delete these SageMaker endpoints (they are not in Terraform's state): "
            + ", ".join(f"{e} (started by the {who})" for e, who in others)
            + ".\nIf they run, stop them first: `modelfleet deployments stop NAME`, or "
            "`aws sagemaker delete-endpoint --endpoint-name ENDPOINT`.",
            err=True,
        )
    if not auto_approve:
        click.confirm(f"destroy everything {folder}/ created?", abort=True)
    run_terraform(folder, "terraform destroy", "destroy", "-auto-approve")
    (folder / "tfplan").unlink(missing_ok=True)


def _endpoints_not_in_state(folder: Path) -> list[tuple[str, str]]:
    """The endpoints the rendered module names but leaves to the control plane or the schedule Lambda,
    from the state's outputs (none before the first apply)."""
    import json

    done = subprocess.run(
        [terraform_binary(), f"-chdir={folder}", "output", "-json", "-no-color"], capture_output=True, text=True
    )
    try:
        outputs = json.loads(done.stdout) if done.returncode == 0 else {}
    except ValueError:
        return []
    found = []
    for name, out in sorted(outputs.items()):
        value = out.get("value") if isinstance(out, dict) else None
        if name.endswith("_endpoint") and isinstance(value, dict) and value.get("created_by") in OTHERS:
            found.append((str(value["endpoint"]), OTHERS[value["created_by"]]))
    return found


OTHERS = {
    "control-plane": "gateway's control plane",
    "gateway-elsewhere": "gateway outside AWS",
    "lambda": "schedule Lambda",
    "nobody": "schedule Lambda, by hand",
}


deploy.add_command(k8s)
deploy.add_command(ci)
deploy.add_command(observability)
