"""Terraform in tests: the real binary, the offline provider mirror, and a moto server the rendered
module is pointed at by an override file (Terraform merges `*_override.tf` into the module, so the
rendered files are applied exactly as rendered)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import PY, _missing, _wait_port, free_port

ROOT = Path(__file__).resolve().parent.parent
# Every endpoint the rendered modules use.
SERVICES = ["acm", "autoscaling", "cloudwatch", "ec2", "ecs", "elasticache", "elbv2", "iam", "lambda", "logs", "rds",
            "sagemaker", "scheduler", "secretsmanager", "sns", "ssm", "sts"]  # fmt: skip


def terraform() -> str:
    found = os.environ.get("MODELFLEET_TERRAFORM") or shutil.which("terraform")
    if not found:
        _missing("terraform is not installed")
    return found  # type: ignore[return-value]


def plugin_dir() -> Path:
    found = Path(os.environ.get("MODELFLEET_TF_PLUGIN_DIR", "/opt/tf-plugins"))
    if not (found / "registry.terraform.io/hashicorp/aws").is_dir():
        _missing(f"no hashicorp/aws provider mirror in {found} (set MODELFLEET_TF_PLUGIN_DIR)")
    return found


def checkov() -> str:
    for candidate in (os.environ.get("MODELFLEET_CHECKOV"), str(ROOT / ".venv-checkov/bin/checkov"),
                      shutil.which("checkov")):  # fmt: skip
        if candidate and Path(candidate).is_file():
            return candidate
    _missing("checkov is not installed (.ci/run puts it in .venv-checkov; or set MODELFLEET_CHECKOV)")
    raise AssertionError("unreachable")


def tf(folder: Path, *args: str, timeout: float = 600, check: bool = True, input_text: str | None = None):
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    env.pop("TF_CLI_CONFIG_FILE", None)
    done = subprocess.run([terraform(), f"-chdir={folder}", *args, "-no-color"], capture_output=True, text=True,
                          timeout=timeout, env=env, input=input_text)  # fmt: skip
    if check:
        assert done.returncode == 0, f"terraform {' '.join(args)}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return done


def init(folder: Path, backend: bool = True) -> None:
    tf(folder, "init", f"-plugin-dir={plugin_dir()}", "-input=false", *(() if backend else ("-backend=false",)))


def render(fleet: Path, out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([PY, "-m", "modelfleet", "deploy", "aws", "-f", str(fleet), "-o", str(out)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def point_at(folder: Path, url: str) -> None:
    """Drop zz_override.tf: the provider talks to moto at `url` with test keys."""
    endpoints = "\n".join(f'    {s} = "{url}"' for s in SERVICES)
    (folder / "zz_override.tf").write_text(f"""provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {{
{endpoints}
  }}
}}
""")


def plan_json(folder: Path) -> dict:
    tf(folder, "plan", "-input=false", "-out=tfplan")
    return json.loads(tf(folder, "show", "-json", "tfplan").stdout)


def planned(plan: dict) -> dict[str, dict]:
    """address -> the resource's planned values, from `terraform show -json`."""
    out: dict[str, dict] = {}

    def walk(module: dict) -> None:
        for r in module.get("resources", []):
            out[r["address"]] = r.get("values") or {}
        for child in module.get("child_modules", []):
            walk(child)

    walk(plan["planned_values"]["root_module"])
    return out


class Moto:
    """A moto server of the test's own (fresh account), AWS's managed IAM policies loaded."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
        self.proc = subprocess.Popen([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
        _wait_port(self.port, 30)

    def client(self, service: str, region: str = "us-east-1"):
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
