"""`modelfleet deploy k8s`: the Kustomize tree it renders builds with `kubectl kustomize`, every object validates
(core kinds with kubernetes-validate --strict, Prometheus Operator kinds against vendored CRD schemas), nothing lacks
resources, probes or a namespace, no secret is ever written, and the Role grants exactly what the platform calls."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from conftest import PY, _binary, _missing, cli
from test_kubernetes import FakeKube

from modelfleet.config import parse_fleet
from modelfleet.control.platforms.kubernetes import KubernetesWorkload
from modelfleet.control.registry import ReplicaRegistry
from modelfleet.values import Replica

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "k8s-platform" / "fleet.yaml"
CRDS = Path(__file__).parent / "data" / "crds"
OVERLAYS = ("dev", "staging", "prod")
KEYS = {"QUANT_KEY": "sk-quant-secret-value-0001", "FINETUNE_KEY": "sk-finetune-secret-value-02",
        "EVAL_KEY": "sk-eval-secret-value-000003", "MODELFLEET_ADMIN_KEY": "admin-secret-value-00000004",
        "MODELFLEET_METRICS_KEY": "metrics-secret-value-000005"}  # fmt: skip
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CLUSTER_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume"}


def kubectl() -> str:
    exe = _binary("kubectl")
    if exe is None:
        _missing("kubectl is not installed (it comes with this machine; .ci/run checks for it)")
    return exe


def render(out: Path, fleet: Path = EXAMPLE, *extra: str, check: bool = True, env: dict | None = None):
    return cli("deploy", "k8s", "-f", str(fleet), "-o", str(out), *extra, check=check, env={**KEYS, **(env or {})})


def build(tree: Path, overlay: str) -> list[dict]:
    done = subprocess.run([kubectl(), "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    render(out)
    return out


@pytest.fixture(scope="module")
def built(tree) -> dict[str, list[dict]]:
    return {overlay: build(tree, overlay) for overlay in OVERLAYS}


def test_rendering_again_gives_identical_bytes(tree, tmp_path):
    render(tmp_path / "again")
    files = sorted(p.relative_to(tree) for p in tree.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for rel in files:
        assert (tree / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    assert (tree / "base" / "fleet.yaml").read_text() == EXAMPLE.read_text()  # shipped as written


def test_every_overlay_builds_and_validates_strictly(tree, built, tmp_path):
    for overlay, docs in built.items():
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=True))
        done = subprocess.run([PY, "-m", "kubernetes_validate", "--strict", "--no-warn", str(path)],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        passed = done.stdout.count(" passed for resource ")
        core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
        assert passed == len(core), done.stdout  # every core object was checked against a schema
        crds = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
        expected = [] if overlay == "dev" else ["PrometheusRule", "ServiceMonitor"]  # components/monitoring
        assert sorted(d["kind"] for d in crds) == expected
        for doc in crds:
            schema = json.loads((CRDS / f"{doc['kind'].lower()}.schema.json").read_text())
            jsonschema.validate(doc, schema)
            if doc["kind"] == "ServiceMonitor":  # /metrics names every team: scraped with auth.metrics_key
                (endpoint,) = doc["spec"]["endpoints"]
                credentials = {"name": "modelfleet-env", "key": "MODELFLEET_METRICS_KEY"}
                assert endpoint["authorization"] == {"type": "Bearer", "credentials": credentials}


def test_the_crd_schemas_catch_a_typo():
    typo = {"alert": "A", "expr": "up == 0", "for": "5 minutes"}
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {},
            "spec": {"groups": [{"name": "g", "rules": [typo]}]}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, json.loads((CRDS / "prometheusrule.schema.json").read_text()))


def test_no_object_lacks_resources_probes_or_a_namespace(built):
    for overlay, docs in built.items():
        for d in docs:
            what = f"{overlay}: {d['kind']}/{d['metadata']['name']}"
            if d["kind"] not in CLUSTER_KINDS:
                assert d["metadata"].get("namespace"), f"{what} has no namespace"
            if d["kind"] not in POD_KINDS:
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), f"{what}: {part}"
                assert c.get("readinessProbe") and c.get("livenessProbe"), f"{what}: probes"


def test_the_gateway_drains_within_its_grace_period_and_keeps_one_pod_through_disruptions(built):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in built["prod"]}
    pod = docs[("Deployment", "modelfleet-gateway")]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 30 + 5  # preStop + server.drain_timeout + margin
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["affinity"]["podAntiAffinity"]
    assert docs[("PodDisruptionBudget", "modelfleet-gateway")]["spec"]["minAvailable"] == 2
    assert docs[("HorizontalPodAutoscaler", "modelfleet-gateway")]["spec"]["minReplicas"] == 3
    # The fleet file ships as a ConfigMap whose name changes with it (so the gateway rolls out).
    config = pod["volumes"][0]["configMap"]["name"]
    assert config.startswith("modelfleet-fleet-") and ("ConfigMap", config) in docs


def test_model_servers_run_vllm_with_their_settings_and_gpus(built):
    docs = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in built["prod"]}
    awq = docs[("Deployment", "team-quant", "qwen-7b-awq")]
    assert "replicas" not in awq["spec"]  # the control plane owns it
    pod = awq["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"].startswith("vllm/vllm-openai:") and server["command"] == ["vllm", "serve"]
    args = server["args"]
    assert args[0] == "Qwen/Qwen2.5-7B-Instruct-AWQ" and "--quantization" in args and "awq" in args
    assert args[args.index("--served-model-name") + 1] == "qwen-7b-awq"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert pod["automountServiceAccountToken"] is False  # an engine never calls the API: it gets no token
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    lora = docs[("Deployment", "team-finetune", "support-v1")]["spec"]["template"]["spec"]["containers"][0]
    assert "--enable-lora" in lora["args"] and "support-v1=your-org/support-lora-v1" in lora["args"]
    token = next(e for e in lora["env"] if e["name"] == "HF_TOKEN")
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    judge = docs[("Deployment", "team-eval", "judge")]["spec"]["template"]["spec"]
    assert "--tensor-parallel-size" in judge["containers"][0]["args"] and judge["nodeSelector"]["workload"] == "eval"
    assert docs[("Service", "team-eval", "judge")]["spec"]["ports"][0]["port"] == 8000
    assert docs[("PersistentVolumeClaim", "team-quant", "quant-models")]["spec"]["storageClassName"] == "efs-sc"


def test_teams_get_a_namespace_with_a_gpu_quota_limits_and_network_policies(built):
    docs = built["prod"]
    quota = {d["metadata"]["namespace"]: d["spec"]["hard"] for d in docs if d["kind"] == "ResourceQuota"}
    assert set(quota) == {"team-quant", "team-finetune", "team-eval"}
    # Each model server's replicas and one pod more for a rollout: AWQ x(2+1) + FP16 x(1+1)
    assert quota["team-quant"]["requests.nvidia.com/gpu"] == "5"
    assert quota["team-eval"]["requests.nvidia.com/gpu"] == "4"  # the judge: 2 GPUs x(1+1)
    assert quota["team-quant"]["requests.memory"] == "144Gi"  # 24Gi x3 + 32Gi x2 + 8Gi for the team's own pods
    assert quota["team-quant"]["pods"] == str(3 + 2 + 10)
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "LimitRange"} == set(quota)
    policies = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["spec"] for d in docs
                if d["kind"] == "NetworkPolicy"}  # fmt: skip
    for ns in quota:
        assert policies[(ns, "default-deny")] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        [to_gateway] = policies[(ns, "to-gateway")]["egress"]
        assert to_gateway["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "modelfleet-gateway"}
        assert to_gateway["ports"] == [{"protocol": "TCP", "port": 8000}]
        [ingress] = policies[(ns, "model-servers-from-gateway")]["ingress"]
        assert ingress["from"] == to_gateway["to"]  # model servers take traffic from the gateway only


def test_dev_runs_the_embedded_engine_on_cpu_with_one_replica_and_its_own_state(tree, built):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in built["dev"]}
    server = docs[("Deployment", "judge")]["spec"]["template"]["spec"]
    assert "nodeSelector" not in server and "tolerations" not in server
    c = server["containers"][0]
    assert c["command"] == ["python", "-m", "modelfleet.engine"] and c["image"].startswith("modelfleet:")
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "nvidia.com/gpu" not in c["resources"]["requests"]
    assert not any(e["name"] == "HF_TOKEN" for e in docs[("Deployment", "support-v1")]["spec"]["template"]["spec"][
        "containers"][0]["env"])  # fmt: skip
    assert ("HorizontalPodAutoscaler", "modelfleet-gateway") not in docs
    assert ("PodDisruptionBudget", "modelfleet-gateway") not in docs
    assert docs[("Deployment", "modelfleet-gateway")]["spec"]["replicas"] == 1
    assert {("StatefulSet", "postgres"), ("StatefulSet", "redis")} <= set(docs)
    env = {e["name"]: e for e in docs[("Deployment", "modelfleet-gateway")]["spec"]["template"]["spec"][
        "containers"][0]["env"]}  # fmt: skip
    assert env["MODELFLEET_STORE"] == {
        "name": "MODELFLEET_STORE",
        "value": "postgresql://modelfleet@postgres.modelfleet.svc:5432/modelfleet",
    }
    dev_fleet = yaml.safe_load((tree / "overlays" / "dev" / "fleet.yaml").read_text())
    assert {d["replicas"] for d in dev_fleet["deployments"].values()} == {1}


def test_secrets_are_referenced_never_rendered(tree):
    everything = "".join(p.read_text() for p in tree.rglob("*") if p.is_file())
    for value in KEYS.values():
        assert value not in everything
    gateway = next(d for d in yaml.safe_load_all((tree / "base" / "gateway.yaml").read_text())
                   if d["kind"] == "Deployment")  # fmt: skip
    env = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs["QUANT_KEY"] == {"name": "modelfleet-env", "key": "QUANT_KEY"}
    assert refs["MODELFLEET_STORE"] == {"name": "modelfleet-env", "key": "MODELFLEET_STORE", "optional": True}


def test_a_secret_written_into_the_fleet_file_is_refused_without_showing_it(tmp_path):
    text = EXAMPLE.read_text().replace(
        'admin_key: "${MODELFLEET_ADMIN_KEY}"', "admin_key: literal-admin-key-0123456789"
    )
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(text.replace("model: Qwen/Qwen2.5-32B-Instruct-AWQ", "model: ${JUDGE_MODEL:-x}"))
    done = render(tmp_path / "out", fleet, check=False)
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert "auth.admin_key: `deploy k8s` ships the fleet file in a ConfigMap" in done.stderr
    assert "deployments.judge.model: `deploy k8s` renders this field into a manifest" in done.stderr
    assert "literal-admin-key" not in done.stderr + done.stdout


def test_a_removed_deployment_leaves_no_file_behind(tmp_path):
    render(tmp_path / "out")
    assert (tmp_path / "out" / "base" / "models" / "judge.yaml").exists()
    text = EXAMPLE.read_text()
    fleet = tmp_path / "fleet.yaml"
    start = text.index("  # The judge:")
    rest = text[text.index("\nroutes:") + 1 :].replace("  judge: {deployments: [judge], timeout: 120s}\n", "")
    fleet.write_text(text[:start] + rest)
    render(tmp_path / "out", fleet)
    assert not (tmp_path / "out" / "base" / "models" / "judge.yaml").exists()
    build(tmp_path / "out", "prod")


def test_the_role_grants_exactly_what_the_platform_calls(tree, start):
    """Start, stop and watch a kubernetes deployment against the fake API server; its calls are the Role's rules."""
    roles = [d for d in yaml.safe_load_all((tree / "base" / "rbac.yaml").read_text()) if d["kind"] == "Role"]
    quant = next(r for r in roles if r["metadata"]["namespace"] == "team-quant")
    granted = {(g, res, verb) for rule in quant["rules"] for g in rule["apiGroups"] for res in rule["resources"]
               for verb in rule["verbs"]}  # fmt: skip
    assert all(r["metadata"]["name"] == "modelfleet-gateway" for r in roles) and len(roles) == 3
    kube = start(FakeKube)
    httpx.post(kube.url + "/fake/deployments", json={"namespace": "team-quant", "name": "qwen-7b-awq", "replicas": 0})
    fleet = parse_fleet(EXAMPLE.read_text(), env=KEYS)
    dep = fleet.deployments["qwen-7b-awq"].model_copy(update={"api_url": kube.url})

    async def run() -> None:
        registry = ReplicaRegistry()
        name = "qwen-7b-awq"
        reps = registry.add(name, [Replica(name, f"{name}-{i}", "") for i in range(dep.replicas)])
        platform = KubernetesWorkload(reps, dep, registry)
        await platform.campaign()  # its Lease: get, create, then update while renewing
        await platform.start()
        while not all(r.ready for r in reps):
            await asyncio.sleep(0.05)
        await platform.publish_activity(at=1.0, now=1.0, every=0)  # an annotation: a patch of the Deployment
        await platform.stop()
        await platform.shutdown()  # hands the Lease on: an update

    asyncio.run(run())
    called = {(c["group"], c["resource"], c["verb"]) for c in kube.calls()}
    assert called == granted
    assert {c["namespace"] for c in kube.calls()} == {"team-quant"}


def test_two_deployments_with_one_kubernetes_name_are_refused(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments:\n  Qwen_7B: {kind: kubernetes, model: m}\n  qwen-7b: {kind: kubernetes, model: m}\n"
                     "routes:\n  r: {deployments: [Qwen_7B, qwen-7b]}\n")  # fmt: skip
    done = render(tmp_path / "out", fleet, check=False)
    assert done.returncode == 2
    assert (
        "deployments.qwen-7b: its Kubernetes name 'qwen-7b' in namespace 'modelfleet' is also deployments.Qwen_7B's"
        in done.stderr
    )


def test_the_renderer_imports_no_control_plane_or_api_code():
    code = (
        "import sys, modelfleet.deploy.k8s, modelfleet.cli.deploy_k8s\n"
        "print(sorted(m for m in sys.modules if m.startswith(('modelfleet.control', 'modelfleet.api'))))"
    )
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_alerts_are_valid_promql_and_fire_on_what_the_gateway_exports(tree, tmp_path):
    promtool = _binary("promtool")
    if promtool is None:
        _missing("promtool is not installed (.ci/run installs it: apt-get install prometheus)")
    docs = yaml.safe_load_all((tree / "components" / "monitoring" / "monitoring.yaml").read_text())
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(Path(__file__).parent / "data" / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "alerts_test.yaml"]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
