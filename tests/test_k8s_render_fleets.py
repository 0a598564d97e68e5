"""`modelfleet deploy k8s` on fleets beyond the example: team names that are not DNS labels, fleets that
`include:` team files, ${VAR}s in URL fields, a cluster without the Prometheus Operator, the gateway's HPA.
Every tree is built with `kubectl kustomize` (the one on the machine) and validated with kubernetes-validate."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from conftest import PY
from test_k8s_render import EXAMPLE, build, kubectl, render

from modelfleet.config import load_fleet

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
SERVER = "{kind: kubernetes, model: m, gpus: 0, resources: {cpu: '1', memory: 1Gi}"


def validate(docs: list[dict], tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=True))
    done = subprocess.run([PY, "-m", "kubernetes_validate", "--strict", "--no-warn", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_team_names_become_valid_namespaces_and_labels(tmp_path):
    long = "Research_And_Development." + "x" * 80
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"""\
auth: {{metrics_key: "${{MODELFLEET_METRICS_KEY}}"}}
deployments:
  chat: {SERVER}, namespace: team-ml-platform}}
routes:
  chat: {{deployments: [chat]}}
teams:
  ML_Platform: {{routes: [chat]}}
  {long}: {{routes: [chat]}}
""")  # fmt: skip
    render(tmp_path / "out", fleet)
    docs = build(tmp_path / "out", "prod")
    validate(docs, tmp_path)
    namespaces = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
    assert "team-ml-platform" in namespaces  # where the deployment said it lives: under the team's quota
    assert all(DNS_LABEL.match(ns) and len(ns) <= 63 for ns in namespaces), namespaces
    for d in docs:
        for key, value in (d["metadata"].get("labels") or {}).items():
            assert LABEL_VALUE.match(value), f"{d['kind']}/{d['metadata']['name']}: label {key}={value!r}"
    quota = next(d for d in docs if d["kind"] == "ResourceQuota" and d["metadata"]["namespace"] == "team-ml-platform")
    assert quota["spec"]["hard"]["requests.cpu"] == "6"  # 1 CPU x (1 + 1 for a rollout) + 4 for the team's pods


def test_two_teams_with_one_namespace_are_a_config_error_naming_both(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"""\
deployments:
  chat: {SERVER}}}
routes:
  chat: {{deployments: [chat]}}
teams:
  Team_A: {{routes: [chat]}}
  team-a: {{routes: [chat]}}
""")  # fmt: skip
    done = render(tmp_path / "out", fleet, check=False)
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    assert f"{fleet}: teams.team-a: its namespace 'team-team-a'" in done.stderr
    assert "is also teams.Team_A's; rename one of them" in done.stderr


def test_a_fleet_that_includes_team_files_renders_and_the_pod_reads_the_same_fleet(tmp_path):
    (tmp_path / "teams.d").mkdir()
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(f"""\
include: {{files: [teams.d/], team_settings: [keys], env: {{search: [SEARCH_KEY]}}}}
auth: {{admin_key: "${{MODELFLEET_ADMIN_KEY}}", metrics_key: "${{MODELFLEET_METRICS_KEY}}"}}
deployments:
  base-llm: {SERVER}, namespace: team-core}}
routes:
  chat: {{deployments: [base-llm]}}
teams:
  core: {{keys: ["${{CORE_KEY}}"], routes: "*"}}
""")  # fmt: skip
    (tmp_path / "teams.d" / "search.yaml").write_text(f"""\
team: search
teams:
  search: {{keys: ["${{SEARCH_KEY}}"]}}
deployments:
  search-llm: {SERVER}, namespace: team-search, replicas: 2}}
routes:
  search-chat: {{deployments: [search-llm]}}
""")  # fmt: skip
    done = render(tmp_path / "out", fleet)
    assert "SEARCH_KEY" in done.stdout  # a ${VAR} of a team file is read from the Secret too
    for overlay in ("dev", "prod"):
        docs = build(tmp_path / "out", overlay)
        validate(docs, tmp_path)
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert {("Deployment", "search-llm"), ("Deployment", "base-llm")} <= kinds
        config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("modelfleet-"))
        gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelfleet-gateway")
        container = gateway["spec"]["template"]["spec"]["containers"][0]
        assert {e["name"] for e in container["env"] if "valueFrom" in e} >= {"CORE_KEY", "SEARCH_KEY"}
        # /etc/modelfleet as the kubelet lays the ConfigMap out (the volume's items), read as `modelfleet serve` does
        volume = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "fleet")
        etc = tmp_path / overlay / "etc"
        for item in volume["configMap"]["items"]:
            (etc / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (etc / item["path"]).write_text(config["data"][item["key"]])
        keys = {
            "MODELFLEET_ADMIN_KEY": "a" * 24,
            "MODELFLEET_METRICS_KEY": "m" * 24,
            "CORE_KEY": "sk-core-" + "c" * 20,
            "SEARCH_KEY": "sk-search-" + "s" * 20,
        }
        mounted = load_fleet(etc / "fleet.yaml", env=keys)
        assert set(mounted.deployments) == {"base-llm", "search-llm"}
        assert mounted.deployments["search-llm"].replicas == (1 if overlay == "dev" else 2)
        assert set(mounted.teams) == {"core", "search"}


def test_a_team_file_outside_the_fleets_folder_is_refused(tmp_path):
    (tmp_path / "teams").mkdir()
    (tmp_path / "platform").mkdir()
    (tmp_path / "teams" / "a.yaml").write_text("team: a\nteams: {a: {}}\n")
    fleet = tmp_path / "platform" / "fleet.yaml"
    fleet.write_text(f"include: [../teams/a.yaml]\ndeployments:\n  x: {SERVER}}}\nroutes:\n  r: {{deployments: [x]}}\n")
    done = render(tmp_path / "out", fleet, check=False)
    assert done.returncode == 2 and "must sit in its folder or below" in done.stderr


def test_unset_vars_in_url_fields_render(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("""\
state: {store: "${MODELFLEET_STORE}", counters: "${MODELFLEET_REDIS}"}
deployments:
  ext: {kind: openai, urls: ["${VLLM_URL}", "http://${VLLM_HOST}:8000/v1"], api_key: "${VLLM_KEY}"}
routes:
  chat: {deployments: [ext]}
""")
    done = render(tmp_path / "out", fleet)
    assert "MODELFLEET_REDIS, MODELFLEET_STORE, VLLM_HOST, VLLM_KEY, VLLM_URL" in done.stdout
    everything = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert ".invalid" not in everything and "unset-for-rendering" not in everything  # placeholders stay inside
    validate(build(tmp_path / "out", "prod"), tmp_path)


def test_base_applies_without_the_prometheus_operator_and_the_hpa_owns_the_gateway_count(tmp_path):
    render(tmp_path / "out", EXAMPLE, "--no-monitoring")
    for target in ("base", "overlays/prod", "overlays/staging"):
        done = subprocess.run([kubectl(), "kustomize", str(tmp_path / "out" / target)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        docs = [d for d in yaml.safe_load_all(done.stdout) if d]
        assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")], target
        validate(docs, tmp_path)
        gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelfleet-gateway")
        assert "replicas" not in gateway["spec"]  # `kubectl apply` never resets what the HPA chose
        hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
        assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["scaleTargetRef"]["name"] == "modelfleet-gateway"
    component = yaml.safe_load((tmp_path / "out" / "components" / "monitoring" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"  # still rendered, for an overlay to take with one line
