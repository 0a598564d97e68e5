"""examples/k8s-platform: its README walkthrough, step by step (the fake API server on a free port, not 8001)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import PY, Gateway, cli
from test_k8s_render import KEYS, kubectl
from test_kubernetes import FakeKube

pytestmark = pytest.mark.slow  # gateway and fake API server processes, end to end

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "k8s-platform"
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:PORT"}}]
users: [{name: me, user: {}}]
contexts: [{name: fake, context: {cluster: fake, user: me}}]
current-context: fake
"""


def test_the_readme_walkthrough(tmp_path, start, monkeypatch):
    readme = (EXAMPLE / "README.md").read_text()
    shutil.copy(EXAMPLE / "fleet.yaml", tmp_path / "fleet.yaml")
    monkeypatch.chdir(tmp_path)
    # 1. check, 2. render
    assert "modelfleet config check -f fleet.yaml" in readme
    assert "ok: 5 deployment(s), 5 route(s), 3 team(s)" in cli("config", "check", "-f", "fleet.yaml", env=KEYS).stdout
    assert "modelfleet deploy k8s -f fleet.yaml -o k8s/ --image registry.example.com/modelfleet:0.1.0" in readme
    out = cli("deploy", "k8s", "-f", "fleet.yaml", "-o", "k8s/", "--image", "registry.example.com/modelfleet:0.1.0",
              env=KEYS).stdout  # fmt: skip
    assert "5 model server(s), 3 team namespace(s)" in out
    for path in ("base/fleet.yaml", "base/gateway.yaml", "base/rbac.yaml", "base/models/judge.yaml",
                 "base/teams/team-quant.yaml", "components/monitoring/monitoring.yaml",
                 "overlays/dev/kustomization.yaml"):  # fmt: skip
        assert (tmp_path / "k8s" / path).is_file(), path
    # 3. build and check
    assert "kubectl kustomize k8s/overlays/prod > prod.yaml" in readme
    built = subprocess.run([kubectl(), "kustomize", "k8s/overlays/prod"], capture_output=True, text=True, check=True)
    (tmp_path / "prod.yaml").write_text(built.stdout)
    checked = subprocess.run([PY, "-m", "kubernetes_validate", "--strict", "prod.yaml"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # 5. the gateway against the fake API server
    kube = start(FakeKube, "--manifests", "prod.yaml")
    (tmp_path / "kubeconfig.yaml").write_text(KUBECONFIG.replace("PORT", kube.url.rsplit(":", 1)[1]))
    assert "KUBECONFIG=kubeconfig.yaml modelfleet serve -f fleet.yaml" in readme
    gw = start(Gateway, tmp_path / "fleet.yaml", env={**KEYS, "KUBECONFIG": str(tmp_path / "kubeconfig.yaml")})
    awq = [p for p in httpx.get(kube.url + "/fake/pods").json() if p["deployment"] == "qwen-7b-awq"]
    assert len(awq) == 2  # scaled to its replicas by the gateway
    with httpx.Client(base_url=gw.url, timeout=30) as http:

        def ask(key: str, model: str, user: str = "me") -> httpx.Response:
            body = {"model": model, "user": user, "messages": [{"role": "user", "content": "Hi"}]}
            return http.post("/chat/completions", json=body, headers={"Authorization": f"Bearer {KEYS[key]}"})

        for i in range(1, 41):
            assert ask("FINETUNE_KEY", "support", f"user-{i}").status_code == 200
        served = {p["deployment"]: p["requests"] for p in httpx.get(kube.url + "/fake/pods").json()}
        assert served["support-v1"] + served["support-v2"] == 40
        assert served["support-v1"] > 2 * served["support-v2"] > 0, served  # about 80/20
        assert "modelfleet deployments stop judge" in readme
        cli("deployments", "stop", "judge", "--url", gw.base, "--admin-key", KEYS["MODELFLEET_ADMIN_KEY"])
        woken = ask("EVAL_KEY", "judge")
        assert woken.status_code == 200 and woken.json()["choices"][0]["message"]["content"]
        args = ["--url", gw.base, "--admin-key", KEYS["MODELFLEET_ADMIN_KEY"]]
        status = {d["name"]: d for d in json.loads(cli("deployments", "status", "--json", *args).stdout)}
        judge = status["judge"]
        assert (judge["kind"], judge["observed"], judge["wakes"]) == ("kubernetes", "running", 1)
        assert ask("FINETUNE_KEY", "judge").status_code == 403
        assert ask("QUANT_KEY", "qwen-7b").status_code == 200
