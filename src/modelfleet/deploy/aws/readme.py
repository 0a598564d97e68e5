"""The rendered folder's README.md: what is here, how to apply it, and the steps Terraform must not do."""

from __future__ import annotations

from modelfleet.config.sagemaker_names import names
from modelfleet.deploy.aws import gateway_fleet, ownership
from modelfleet.deploy.aws.module import Module
from modelfleet.deploy.aws.sagemaker import role_label, secret_name
from modelfleet.deploy.aws.schedules import aws_cron, event_file

_OWNER = {
    "terraform": "Terraform (`aws_sagemaker_endpoint`)",
    "control-plane": "the gateway's control plane",
    "gateway-elsewhere": "your gateway's control plane (wake on request, idle stop)",
    "lambda": "the schedule Lambda",
    "nobody": "you, once: `aws lambda invoke` with `events/NAME-start.json` (below)",
}


def render(m: Module, source: str) -> str:
    d = m.deploy
    out = [
        f"# {d.name}: modelfleet on AWS ({d.region})",
        "",
        f"Rendered by `modelfleet deploy aws -f {source}`. Edit the fleet file and render again; do not edit",
        "these files (a re-render overwrites them, and the same fleet file always gives the same bytes).",
        "",
        "## Use it",
        "",
        "```sh",
        "modelfleet deploy check -C .     # terraform fmt -check and validate",
        "modelfleet deploy plan -C .      # terraform init + plan, saved as tfplan",
        "modelfleet deploy apply -C .     # applies the saved plan",
        "modelfleet deploy destroy -C .   # everything below is deleted again",
        "```",
        "",
        "Plain `terraform init && terraform apply` works the same way. State: "
        + (
            f"S3 bucket `{d.state_backend.s3_bucket}`, key `{d.state_backend.key}`."
            if d.state_backend
            else "a local `terraform.tfstate` in this folder (set `deploy.state_backend` for S3)."
        ),
        "",
    ]
    deps = m.sagemaker()
    if deps:
        out += [
            "## SageMaker deployments",
            "",
            "| deployment | endpoint | model and config | endpoint created by |",
            "| --- | --- | --- | --- |",
        ]
        for name, dep in deps.items():
            owner = ownership.endpoint_owner(dep, m.gateway_in_aws)
            made = "by Terraform" if ownership.model_by_terraform(dep) else "at first start: it has an HF token"
            out.append(f"| {name} | `{dep.endpoint}` | `{names(dep).model}`, {made} | {_OWNER[owner]} |")
        out += [
            "",
            "Models and configs are named `ENDPOINT-DIGEST`, the digest of their `create:` settings, exactly",
            "as the control plane names them: `modelfleet deployments start|stop` and Terraform never fight. New",
            "settings are a new model and config beside the old ones; the endpoint moves to them.",
            "",
            "Each `create.role_arn` names a role this module creates. If one exists already (apply stops",
            "with EntityAlreadyExists), take it over instead: "
            + ", ".join(
                f"`terraform import aws_iam_role.{role_label(r)} {r.rsplit('/', 1)[1]}`"
                for r in sorted({dep.create.role_arn for dep in deps.values() if dep.create})
            )
            + ".",
            "",
            "`destroy` deletes what Terraform created. Stop endpoints it did not create first (`modelfleet",
            "deployments stop NAME`, or the Lambda's stop event); models and configs made at a first start",
            "stay until `aws sagemaker delete-model` and `delete-endpoint-config` (they cost nothing).",
            "",
        ]
    tokens = [(n, dep) for n, dep in deps.items() if ownership.has_token(dep)]
    if tokens or m.gateway_in_aws:
        out += [
            "## Secrets: set them out of band, once",
            "",
            "Terraform creates the secrets but never their values, so no secret is in its files or state.",
            "",
            "```sh",
        ]
        for name, _ in tokens:
            out.append(
                f"aws secretsmanager put-secret-value --region {d.region} --secret-id {secret_name(m, name)} "
                '--secret-string "$HF_TOKEN"'
            )
        if m.gateway_in_aws:
            refs = gateway_fleet.env_vars(m) or ["ADMIN_KEY"]
            doc = ", ".join(f'"{r}": "..."' for r in refs)
            out.append(
                f"aws secretsmanager put-secret-value --region {d.region} --secret-id {d.name}/gateway-env "
                f"--secret-string '{{{doc}}}'"
            )
        out += ["```", ""]
        if tokens:
            out += [
                "An HF token reaches the container only through CreateModel: the control plane (or the schedule",
                "Lambda) reads the secret when it first creates the model, so those models are not in Terraform.",
                "A new token takes effect with a new model: stop the endpoint, delete the model, start it again.",
                "",
            ]
        if m.gateway_in_aws:
            out += [
                "The gateway-env secret holds the fleet file's `${VARS}` (team keys, admin key) as JSON; each",
                "gateway reads it at boot. After changing it, start an instance refresh (below).",
                "",
            ]
    lam = {n: dep for n, dep in deps.items() if ownership.endpoint_owner(dep, m.gateway_in_aws) in ("lambda", "nobody")}
    if lam:
        out += [
            "## Schedules",
            "",
            "EventBridge Scheduler invokes the schedule Lambda (`lambda/lambda_schedule.py`)",
            "with `events/NAME-start.json` or `-stop.json`: start creates the endpoint from the kept model and",
            "config, stop deletes it and keeps them.",
            "",
            "| deployment | start | stop | timezone |",
            "| --- | --- | --- | --- |",
        ]
        for name, dep in lam.items():
            s = dep.schedule
            start = f"`{aws_cron(s.start, name)}`" if s and s.start else "-"
            stop = f"`{aws_cron(s.stop, name)}`" if s and s.stop else "-"
            out.append(f"| {name} | {start} | {stop} | {s.timezone if s else '-'} |")
        first = next(iter(lam))
        out += [
            "",
            "Start or stop one by hand:",
            "",
            "```sh",
            f"aws lambda invoke --region {d.region} --function-name {d.name}-schedule "
            f"--cli-binary-format raw-in-base64-out --payload file://{event_file(first, 'start')} out.json",
            "```",
            "",
            "Without a gateway in AWS, `idle_stop_after` and `wake_on_request` have nobody to act on them:",
            "only the cron boundaries are kept here.",
            "",
        ]
    if m.gateway_in_aws:
        out += _gateway(m)
    out += [
        "## Security scan",
        "",
        "`checkov -d .` passes; each accepted finding is skipped inline (`#checkov:skip=...`) with its reason.",
        "",
    ]
    return "\n".join(out)


def _gateway(m: Module) -> list[str]:
    d = m.deploy
    shared = "RDS PostgreSQL and ElastiCache Redis (shared_state.tf)" if d.gateway_count > 1 else "SQLite on each"
    out = ["## The gateway", ""]
    if d.gateway == "ec2":
        out += [
            f"{d.ec2.count} x `{d.ec2.instance_type}` in an Auto Scaling group across the AZs, behind an ALB",
            "(HTTPS with your certificate; HTTP redirects). The target group checks `/readyz` every 10 s;",
            f"two failures take a gateway out, and the group replaces it. State: {shared}.",
            "",
            f"Each instance installs `{d.ec2.package}`, fetches `gateway/fleet.yaml` from SSM",
            "Parameter Store and runs `modelfleet serve` as the systemd unit `modelfleet`. A new fleet file",
            "is a new launch template version, and `terraform apply` rolls the gateways one by one. There",
            "is no SSH: use `aws ssm start-session --target INSTANCE_ID`.",
            "",
            "After changing a secret: `aws autoscaling start-instance-refresh --auto-scaling-group-name "
            f"{d.name}-gateway`.",
        ]
    else:
        f = d.fargate
        installs = f"installs `{f.package}` at start, " if f.package else ""
        out += [
            f"{f.count} ECS Fargate tasks ({f.cpu} CPU units, {f.memory} MiB, `{f.image}`) across the private",
            "subnets, behind an ALB (HTTPS with your certificate; HTTP redirects). The target group checks",
            f"`/readyz` every 10 s; two failures take a task out, and ECS replaces it. State: {shared}.",
            "",
            f"Each task {installs}gets `gateway/fleet.yaml` (from SSM) and the fleet's `${{VARS}}` (from the",
            "gateway-env secret) as ECS secrets, and runs `modelfleet serve`. A new fleet file is a new task",
            "definition revision, rolled out by the service; a failing rollout is rolled back. Tasks start",
            "only once the gateway-env secret has a value: ECS reads it when it starts a task.",
            "",
            f"After changing a secret: `aws ecs update-service --cluster {d.name}-gateway --service {d.name}-gateway "
            "--force-new-deployment`.",
        ]
    return [*out, ""]
