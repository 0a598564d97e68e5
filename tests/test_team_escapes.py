"""The second review's escapes: a hostile team file, hostile YAML, and plans a careless platform lets through.

Each test was red before its fix. The plan is made by real terraform from tests/fixtures/plans/dodges2/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import cli
from tfplan import FIXTURES, make_plan

from modelfleet.config import load_fleet, parse_fleet
from modelfleet.cost import month_period
from modelfleet.errors import ConfigError
from modelfleet.policy import check

POLICY = Path(__file__).parent / "fixtures" / "policy"
DECEMBER = month_period("2026-12")

PLATFORM = """\
include:
  files: [teams.d/]
  team_settings: [keys, limits, tags]
{extra}teams:
  evil: {{limits: {{rpm: 100}}}}
deployments:
  plat: {{kind: sagemaker, endpoint: plat-llm, region: eu-central-1, container: messages}}
  plat-vllm: {{kind: openai, urls: ["http://127.0.0.1:9/v1"]}}
routes:
  chat: {{deployments: [plat, plat-vllm]}}
"""


def team(tmp: Path, text: str, extra: str = "") -> Path:
    (tmp / "teams.d").mkdir(exist_ok=True)
    (tmp / "fleet.yaml").write_text(PLATFORM.format(extra=extra))
    (tmp / "teams.d" / "evil.yaml").write_text("team: evil\n" + text)
    return tmp / "fleet.yaml"


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_fleet(path, env={})
    assert exc.value.file == str(path.parent / "teams.d" / "evil.yaml"), str(exc.value)
    return str(exc.value)


def sagemaker(extra: str, container: str = "tgi") -> str:
    return (
        f"deployments:\n  mine: {{kind: sagemaker, endpoint: mine, region: eu-central-1, container: {container}, "
        f"{extra}}}\nroutes:\n  mine-chat: {{deployments: [mine]}}\n"
    )


@pytest.mark.parametrize("path", ["/proc/self/environ", "../fleet.yaml", "../../etc/passwd"])
def test_a_team_file_reads_no_file_outside_its_folder_into_a_chat_template(tmp_path, path):
    # a chat template is rendered into every prompt sent to the team's endpoint: /proc/self/environ there is
    # the gateway's whole environment (admin key, AWS keys), bypassing include.env
    message = refused(team(tmp_path, sagemaker(f"chat_template: {path}")))
    assert "deployments.mine.chat_template (line 3): a team file's deployments read files only in its own " in message
    assert f"{path!r} is outside it" in message


def test_a_symlink_beside_the_team_file_does_not_lead_out_of_its_folder(tmp_path):
    path = team(tmp_path, sagemaker("chat_template: tpl.jinja"))
    (tmp_path / "secret.jinja").write_text("the platform's secret")
    (tmp_path / "teams.d" / "tpl.jinja").symlink_to(tmp_path / "secret.jinja")
    assert "'tpl.jinja' is outside it" in refused(path)


def test_a_team_files_paths_are_relative_to_the_team_file(tmp_path):
    path = team(tmp_path, sagemaker("chat_template: templates/chat.jinja"))
    (tmp_path / "teams.d" / "templates").mkdir()
    (tmp_path / "teams.d" / "templates" / "chat.jinja").write_text("{{ messages }}")
    fleet = load_fleet(path, env={})
    assert fleet.deployments["mine"].chat_template == (tmp_path / "teams.d" / "templates" / "chat.jinja").resolve()


def test_a_team_llama_cpp_model_outside_its_folder_is_refused(tmp_path):
    text = "deployments:\n  mine: {kind: llama-cpp, model_path: /etc/shadow}\nroutes:\n  r: {deployments: [mine]}\n"
    assert "deployments.mine.model_path (line 3)" in refused(team(tmp_path, text))


def test_a_team_kubernetes_deployment_mounts_only_the_secrets_the_platform_names(tmp_path):
    # the rendered Deployment runs the team's own image with that Secret in its environment
    text = (
        "deployments:\n  mine: {kind: kubernetes, model: m/m, image: evil/exfil,\n"
        "         hf_token_secret: {name: platform-hf}}\n"
        "routes:\n  r: {deployments: [mine]}\n"
    )
    message = refused(team(tmp_path, text))
    assert "deployments.mine.hf_token_secret.name (line 4): a team file references only the secrets" in message
    assert "(include.secrets: none); Kubernetes Secret 'platform-hf' is not one of them" in message
    allowed = text.replace("platform-hf", "evil-hf")
    fleet = load_fleet(team(tmp_path, allowed, "  secrets: {evil: [evil-*]}\n"), env={})
    assert fleet.deployments["mine"].hf_token_secret.name == "evil-hf"


@pytest.mark.parametrize("field", ["endpoint_url", "runtime_url"])
def test_a_team_file_cannot_send_aws_signed_requests_to_its_own_server(tmp_path, field):
    # boto3 signs with the gateway's credentials: the key id and a role's session token go to that URL
    message = refused(team(tmp_path, sagemaker(f"{field}: 'http://evil.example:8080'", "messages")))
    assert f"deployments.mine.{field} (line 3): the gateway signs requests to this URL with its AWS credentials" in (
        message
    )
    assert "include.aws_endpoints (none); got 'http://evil.example:8080'" in message


def test_a_team_file_names_aws_or_the_endpoints_the_platform_lists(tmp_path):
    text = sagemaker("runtime_url: 'https://runtime.sagemaker.eu-central-1.amazonaws.com'", "messages")
    assert load_fleet(team(tmp_path, text), env={}).deployments["mine"].runtime_url
    text = sagemaker("endpoint_url: 'http://127.0.0.1:5000'", "messages")
    extra = "  aws_endpoints: ['http://127.0.0.1:5000/']\n"
    assert load_fleet(team(tmp_path, text, extra), env={}).deployments["mine"].endpoint_url
    for host in [
        "amazonaws.com.evil.example",
        "abc123.execute-api.eu-central-1.amazonaws.com",  # someone's API Gateway
        "evil-123.eu-central-1.elb.amazonaws.com",  # someone's load balancer
        "ec2-3-120-0-1.eu-central-1.compute.amazonaws.com",  # someone's instance
    ]:
        fake = sagemaker(f"runtime_url: 'https://{host}'", "messages")
        assert "the gateway signs requests" in refused(team(tmp_path, fake)), host
    vpce = "https://vpce-0123-abcd.runtime.sagemaker.eu-central-1.vpce.amazonaws.com"
    assert load_fleet(team(tmp_path, sagemaker(f"runtime_url: '{vpce}'", "messages")), env={})


@pytest.mark.parametrize(
    "spec",
    [
        "endpoint_url: 'https://api.sagemaker.eu-central-1.amazonaws.com'",  # the default URL, spelled out
        "runtime_url: 'https://runtime.sagemaker.eu-central-1.amazonaws.com'",
    ],
)
def test_the_platforms_endpoint_through_another_url_is_still_the_platforms(tmp_path, spec):
    text = sagemaker(spec, "messages").replace("endpoint: mine", "endpoint: plat-llm")
    message = refused(team(tmp_path, text))
    assert "the SageMaker endpoint 'plat-llm' in eu-central-1 is already deployment 'plat'" in message


@pytest.mark.parametrize("url", ["http://127.1:9/v1", "http://0x7f000001:9/v1", "http://[::ffff:127.0.0.1]:9/v1"])
def test_the_platforms_server_spelled_as_another_ip_literal_is_still_the_platforms(tmp_path, url):
    text = f"deployments:\n  mine: {{kind: openai, urls: ['{url}']}}\nroutes:\n  r: {{deployments: [mine]}}\n"
    assert "the server http://127.0.0.1:9/v1 is already deployment 'plat-vllm'" in refused(team(tmp_path, text))


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("{limits: {rpm: lots}}", "teams.evil.limits.rpm (line 3): input should be a valid integer"),
        ("[keys]", "teams.evil (line 3): expected a mapping of the team's settings"),
    ],
)
def test_a_team_files_bad_settings_are_its_own_error_not_a_traceback(tmp_path, settings, expected):
    assert expected in refused(team(tmp_path, f"teams:\n  evil: {settings}\n"))


def test_the_platforms_limits_stay_ceilings(tmp_path):
    fleet = load_fleet(team(tmp_path, "teams:\n  evil: {limits: {rpm: 5000, tpm: 9}}\n"), env={})
    assert (fleet.teams["evil"].limits.rpm, fleet.teams["evil"].limits.tpm) == (100, 9)


def laughs(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndeployments: {{d: {{kind: openai, urls: *a{levels - 1}}}}}\n"


def test_aliases_that_expand_to_a_billion_values_are_refused_at_once(tmp_path):
    path = team(tmp_path, laughs(9))  # 10^9 values from a 600-byte file: before, the gateway never started
    began = time.monotonic()
    message = refused(path)
    assert time.monotonic() - began < 5
    assert "anchors and aliases here expand to over 200,000 values" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply to read"),
        ("routes: " + "[" * 100 + "]" * 100 + "\n", "line 2: nested deeper than 64 levels"),
        (
            "deployments:\n  mine: {kind: openai, urls: ['http://10.0.0.1/v1']}\nteam: evil\n",
            "line 4: duplicate key 'team' (first on line 1); YAML would keep only the last one",
        ),
        ("x: " + "y" * 2_000_001 + "\n", "a fleet file is a few KB"),
    ],
    ids=["deep-for-the-parser", "deep", "duplicate-key", "huge"],
)
def test_hostile_yaml_is_a_config_error_naming_the_team_file(tmp_path, text, expected):
    assert expected in refused(team(tmp_path, text))


def test_merge_keys_still_work_and_a_reviewer_sees_one_value_per_key(tmp_path):
    text = (
        "base: &base {kind: openai, urls: ['http://10.0.0.1/v1']}\n"
        "deployments:\n  mine: {<<: *base, model: m}\nroutes:\n  r: {deployments: [mine]}\n"
    )
    assert "unknown field 'base'" in refused(team(tmp_path, text))  # the anchor's holder; the merge itself is fine
    with pytest.raises(ConfigError) as exc:
        parse_fleet("deployments: {a: {kind: openai, urls: ['http://h/v1']}}\nroutes: {}\nroutes: {}\n", env={})
    assert "line 3: duplicate key 'routes' (first on line 2)" in str(exc.value)


def test_policy_checks_a_fleet_with_a_kubernetes_deployment(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "policy: {max_instances_per_deployment: 2}\n"
        "deployments: {k: {kind: kubernetes, model: Qwen/Qwen2.5-7B-Instruct, replicas: 3}}\n"
        "routes: {chat: {deployments: [k]}}\n"
    )
    done = cli("policy", "check", "-f", str(path), check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # was an AssertionError traceback
    assert "deployments.k.replicas" in done.stdout and "3 instances" in done.stdout


def test_a_sagemaker_endpoint_made_elsewhere_is_still_in_its_region(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "policy: {regions: [eu-central-1]}\n"
        "deployments: {sm: {kind: sagemaker, endpoint: sm, region: us-east-1, container: messages}}\n"
        "routes: {chat: {deployments: [sm]}}\n"
    )
    [v] = check(load_fleet(path, env={}), period=DECEMBER)
    assert (v.rule, v.where, v.actual) == ("region-allowed", "deployments.sm.region", "us-east-1")


@pytest.fixture(scope="module")
def dodges2(tmp_path_factory) -> Path:
    return make_plan(FIXTURES / "dodges2", tmp_path_factory.mktemp("dodges2"))


def test_more_dodges_in_a_real_plan_are_caught(dodges2):
    fleet = load_fleet(POLICY / "plan-policy.yaml")
    got = {(v.rule, v.where): v.actual for v in check(fleet, json.loads(dodges2.read_text()), period=DECEMBER)}
    assert got == {
        ("region-allowed", "provider.aws.region"):
            "not in the plan (set from a local, an expression or the environment)",
        ("no-public-ssh", "aws_default_security_group.default.ingress[0]"): "port 22 open to 0.0.0.0/0",
        ("instance-type-allowed", "aws_autoscaling_group.elsewhere.instance_type"):
            "its launch template is not in this plan",
        ("required-tags", "aws_autoscaling_group.elsewhere.tags"):
            "missing team, cost-center, environment",  # default_tags do not reach an autoscaling group
        ("instance-type-allowed", "aws_sagemaker_notebook_instance.notebook.instance_type"): "ml.p3.8xlarge",
        ("store-encrypted", "aws_docdb_cluster.docs.storage_encrypted"): "None",
        ("max-monthly-cost-per-team", "tag team=search"): (
            "no price for ml.p3.8xlarge in us-east-1 (prices as of 2026-11-23): the cap of $10,000.00 cannot "
            "be checked; the priced part is $0.00 a month always-on"
        ),
    }  # fmt: skip


def test_a_plan_with_no_provider_block_takes_its_region_from_the_environment_and_fails_a_region_rule():
    plan = {"planned_values": {"root_module": {"resources": [
        {"address": "aws_instance.a", "type": "aws_instance", "mode": "managed",
         "values": {"instance_type": "m7i.large", "tags_all": {"team": "t", "cost-center": "c",
                                                               "environment": "production"}}},
    ]}}}  # fmt: skip
    fleet = load_fleet(POLICY / "plan-policy.yaml")
    got = {(v.rule, v.where) for v in check(fleet, plan, period=DECEMBER)}
    assert ("region-allowed", "provider.aws.region") in got


def test_the_ci_workflow_says_to_pin_the_production_environment_to_the_main_branch(tmp_path):
    # the apply role trusts environment:production; a pull request's branch could otherwise edit the
    # workflow to run a job in that environment and assume it
    from click.testing import CliRunner

    from modelfleet.cli.deploy_ci import ci

    result = CliRunner().invoke(ci, ["-o", str(tmp_path), "-f", "fleet.yaml", "--branch", "release"])
    assert result.exit_code == 0, result.output
    text = " ".join((tmp_path / ".github/workflows/modelfleet.yml").read_text().split())
    assert "limit # that environment's deployment branches to release" in text


@pytest.mark.parametrize(
    ("platform", "mine", "identity"),
    [
        (
            "plat-sm: {kind: sagemaker, endpoint: plat-sm, container: messages, "
            "create: {image: i, role_arn: 'arn:aws:iam::1:role/platform'}}",
            "mine: {kind: sagemaker, endpoint: mine, container: messages, "
            "create: {image: evil, role_arn: 'arn:aws:iam::1:role/platform'}}",
            "SageMaker execution role arn:aws:iam::1:role/platform",
        ),
        (
            "plat-k8s: {kind: kubernetes, model: m/m, model_cache: {claim: weights}}",
            "mine: {kind: kubernetes, model: m/m, image: evil, model_cache: {claim: weights}}",
            "Kubernetes volume claim 'weights' in namespace modelfleet",
        ),
    ],
    ids=["execution-role", "model-cache"],
)
def test_a_team_cannot_borrow_the_platforms_role_or_model_cache(tmp_path, platform, mine, identity):
    path = team(tmp_path, f"deployments:\n  {mine}\nroutes:\n  r: {{deployments: [mine]}}\n")
    text = path.read_text().replace("deployments:\n", f"deployments:\n  {platform}\n", 1)
    path.write_text(text)
    assert f"the {identity} is already deployment 'plat-" in refused(path)
