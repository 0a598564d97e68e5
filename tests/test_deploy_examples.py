"""Each deploy example's README, followed as a person would: its `modelfleet` commands run in a copy of the
example folder, against a moto server (AWS_ENDPOINT_URL) and the offline provider mirror.

Out-of-band steps are done the same way through boto3 (`aws secretsmanager put-secret-value`); `serve`, `curl`,
`aws lambda invoke` and the like are left to the other tests. always-on stops before `apply`: moto cannot
create its ElastiCache replication group (plan JSON covers it, and test_deploy_apply.py applies a gateway)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest
from tf_harness import PY, ROOT, Moto, plugin_dir, terraform

STOP_BEFORE = {"always-on": "modelfleet deploy apply"}
SKIPPED = ("modelfleet serve", "modelfleet deployments")  # need a running gateway; covered elsewhere


def walkthrough(readme: str) -> list[str]:
    """The README's shell commands, in order, continuation lines joined."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(re.sub(r"\s+", " ", line))
    return commands


@pytest.mark.parametrize("example", ["sagemaker-office-hours", "always-on"])
def test_the_readme_walkthrough_runs(example, tmp_path):
    terraform()
    folder = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, folder)
    commands = walkthrough((folder / "README.md").read_text())
    assert any(c.startswith("modelfleet deploy aws") for c in commands)
    moto = Moto()
    env = {**os.environ, "AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "MODELFLEET_TF_PLUGIN_DIR": str(plugin_dir()),
           "PYTHONPATH": str(ROOT / "src")}  # fmt: skip
    env.pop("TF_CLI_CONFIG_FILE", None)
    ran = []
    try:
        for command in commands:
            if example in STOP_BEFORE and command.startswith(STOP_BEFORE[example]):
                break
            argv = shlex.split(command)
            if command.startswith("aws secretsmanager put-secret-value"):
                region, secret = argv[argv.index("--region") + 1], argv[argv.index("--secret-id") + 1]
                moto.client("secretsmanager", region).put_secret_value(SecretId=secret, SecretString="test-token")
                ran.append(command)
                continue
            if command.startswith("export "):  # through a shell, as typed; its variables carry on
                done = subprocess.run(["bash", "-c", f"{command}; env -0"], env=env, capture_output=True, text=True)
                env.update(v.split("=", 1) for v in done.stdout.split("\0") if "=" in v)
                ran.append(command)
                continue
            if argv[0] != "modelfleet" or command.startswith(SKIPPED):
                continue
            done = subprocess.run([PY, "-m", "modelfleet", *argv[1:]], cwd=folder, env=env, capture_output=True,
                                  text=True, timeout=600, input="y\n")  # fmt: skip
            assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(command)
    finally:
        moto.stop()
    assert "modelfleet deploy plan -C infra/" in ran and (folder / "infra/README.md").exists()
    if example == "sagemaker-office-hours":
        assert ran[-1] == "modelfleet deploy destroy -C infra/"
        assert any(c.startswith("aws secretsmanager put-secret-value") for c in ran)
