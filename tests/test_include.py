"""Platform and team fleets: merging, ownership (every error names the file), isolation at run time."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import Gateway, Upstream, chat_body, cli

from modelfleet.config import load_fleet
from modelfleet.config.include import ownership
from modelfleet.errors import ConfigError

KEYS = {"search": "search-key-0123456789abcdef", "research": "research-key-0123456789abcdef",
        "ops": "ops-key-0123456789abcdef01"}  # fmt: skip

PLATFORM = """\
include:
  files: [teams.d/]
  team_settings: [keys, tags]
  share: {{search-chat: [research]}}
  share_deployments: {{shared: [research]}}
state: {{store: "sqlite:///{tmp}/modelfleet.db", flush_interval: 200ms}}
teams:
  ops: {{keys: ["{ops}"]}}
deployments:
  shared: {{kind: openai, urls: ["{url}"]}}
routes:
  general: {{deployments: [shared]}}
"""

SEARCH = """\
team: search
teams:
  search: {{keys: ["{key}"], tags: {{cost-center: cc-7}}}}
deployments:
  search-llm: {{kind: openai, urls: ["{url}"]}}
routes:
  search-chat: {{deployments: [search-llm]}}
"""

RESEARCH = """\
team: research
teams:
  research: {{keys: ["{key}"]}}
deployments:
  research-llm: {{kind: openai, urls: ["{url}"]}}
routes:
  research-chat: {{deployments: [research-llm, shared]}}
"""


URLS = {"platform": "http://127.0.0.1:9/v1", "search": "http://127.0.0.1:10/v1", "research": "http://127.0.0.1:11/v1"}


def write(tmp: Path, urls: dict[str, str] = URLS, **files: str) -> Path:
    (tmp / "teams.d").mkdir(exist_ok=True)
    (tmp / "fleet.yaml").write_text(PLATFORM.format(tmp=tmp, ops=KEYS["ops"], url=urls["platform"]))
    texts = {"search": SEARCH.format(key=KEYS["search"], url=urls["search"]),
             "research": RESEARCH.format(key=KEYS["research"], url=urls["research"]), **files}  # fmt: skip
    for name, text in texts.items():
        (tmp / "teams.d" / f"{name}.yaml").write_text(text)
    return tmp / "fleet.yaml"


def test_team_files_merge_into_one_fleet_and_each_team_gets_its_routes(tmp_path):
    fleet = load_fleet(write(tmp_path))
    assert set(fleet.deployments) == {"shared", "search-llm", "research-llm"}
    assert set(fleet.routes) == {"general", "search-chat", "research-chat"}
    assert fleet.teams["search"].routes == ["general", "search-chat"]
    assert fleet.teams["research"].routes == ["general", "research-chat", "search-chat"]  # shared with it
    assert fleet.teams["ops"].routes == ["general"]  # a platform team: the platform's routes only
    assert fleet.teams["search"].tags == {"cost-center": "cc-7"}
    owners = ownership(fleet)
    assert owners["deployments.search-llm"].file.endswith("teams.d/search.yaml")
    assert owners["deployments.search-llm"].team == "search"
    assert owners["routes.general"].team is None


def test_config_check_says_which_file_owns_what(tmp_path):
    done = cli("config", "check", "-f", str(write(tmp_path)))
    out = done.stdout
    assert "ok: 3 deployment(s), 3 route(s), 3 team(s)" in out
    assert f"deployments.search-llm                   {tmp_path}/teams.d/search.yaml (team search)" in out
    assert f"routes.general                           {tmp_path}/fleet.yaml (platform)" in out
    assert "team research may use: general, research-chat, search-chat" in out


@pytest.mark.parametrize(
    ("team_file", "expected"),
    [
        ("team: search\nserver: {port: 9999}\n", "server (line 2): a team file cannot change `server`"),
        ("team: search\nstate: {store: 'sqlite:///x.db'}\n", "state (line 2): a team file cannot change `state`"),
        ("team: search\nauth: {admin_key: aaaaaaaaaaaaaaaaaaaa}\n", "auth (line 2): a team file cannot change"),
        ("team: search\npolicy: {regions: [us-east-1]}\n", "policy (line 2): a team file cannot change `policy`"),
        ("team: search\ndeployments:\n  research-llm: {kind: openai, urls: ['http://127.0.0.1:12/v1']}\n",
         "deployments.research-llm (line 3): already declared by team 'research'"),
        ("team: search\ndeployments:\n  shared: {kind: openai, urls: ['http://127.0.0.1:12/v1']}\n",
         "deployments.shared (line 3): already declared by the platform fleet"),
        ("team: search\nroutes:\n  mine: {deployments: [research-llm]}\n",
         "routes.mine.deployments (line 3): deployment 'research-llm' belongs to team 'research'"),
        ("team: search\nteams:\n  research: {tags: {x: y}}\n",
         "teams.research (line 3): this is team 'search''s file; it cannot declare or change team 'research'"),
        ("team: search\nteams:\n  search: {limits: {rpm: 5}}\n",
         "teams.search.limits (line 3): the platform fleet does not let team files set 'limits'"),
        ("team: search\nteams:\n  search: {routes: [general]}\n", "teams.search.routes (line 3): a team's routes"),
        ("deployments: {}\n", "team: a team file names its team"),
        ("team: search\nroutes:\n  search-chat: {deployments: [nope]}\n",
         "routes.search-chat.deployments: unknown deployment 'nope'"),
        ("team: search\ndeployments:\n  x: {kind: openai, urls: [ftp://nope]}\n"
         "routes:\n  search-chat: {deployments: [x]}\n",
         "deployments.x.urls (line 3): expected an http(s) base URL"),
    ],
    ids=["server", "state", "auth", "policy", "other-teams-deployment", "platform-deployment", "route-to-other-team",
         "other-team", "limits-not-allowed", "routes-computed", "no-team", "unknown-deployment", "bad-field"],
)  # fmt: skip
def test_a_team_file_that_breaks_ownership_is_refused_with_the_file_named(tmp_path, team_file, expected):
    path = write(tmp_path, search=team_file)
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    assert exc.value.file == str(tmp_path / "teams.d" / "search.yaml"), str(exc.value)
    assert expected.split(":")[0] in str(exc.value)
    assert expected.split("): ", 1)[-1].split(";")[0] in str(exc.value), str(exc.value)


def test_routing_to_another_teams_deployment_is_refused_whatever_the_file_order(tmp_path):
    # teams.d/research.yaml is read before teams.d/search.yaml, which declares search-llm
    research = RESEARCH.format(key=KEYS["research"], url=URLS["research"]).replace(
        "[research-llm, shared]", "[research-llm, search-llm]"
    )
    with pytest.raises(ConfigError) as exc:
        load_fleet(write(tmp_path, research=research))
    assert exc.value.file == str(tmp_path / "teams.d" / "research.yaml")
    assert "routes.research-chat.deployments (line 7): deployment 'search-llm' belongs to team 'search'" in str(
        exc.value
    )


def test_the_cli_names_the_file_and_exits_2(tmp_path):
    path = write(tmp_path, research="team: research\nserver: {port: 1}\n")
    done = cli("config", "check", "-f", str(path), check=False)
    assert done.returncode == 2
    assert f"{tmp_path}/teams.d/research.yaml: server (line 2): a team file cannot change `server`" in done.stderr


def test_an_include_that_matches_nothing_names_the_platform_file(tmp_path):
    (tmp_path / "fleet.yaml").write_text(
        "include: [teams/*.yaml]\ndeployments: {a: {kind: openai, urls: ['http://127.0.0.1:9/v1']}}\n"
        "routes: {chat: {deployments: [a]}}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_fleet(tmp_path / "fleet.yaml")
    assert exc.value.file == str(tmp_path / "fleet.yaml")
    assert "include.0 (line 1): 'teams/*.yaml' matches no file" in str(exc.value)


def test_an_empty_teams_folder_is_a_platform_with_no_teams_yet(tmp_path):
    (tmp_path / "teams.d").mkdir()
    (tmp_path / "fleet.yaml").write_text(
        "include: [teams.d/]\ndeployments: {a: {kind: openai, urls: ['http://127.0.0.1:9/v1']}}\n"
        "routes: {chat: {deployments: [a]}}\n"
    )
    assert load_fleet(tmp_path / "fleet.yaml").teams == {}


def test_secrets_in_team_files_are_never_shown(tmp_path):
    text = "team: search\nteams:\n  search: {keys: [short-secret]}\nroutes:\n  search-chat: {deployments: [general]}\n"
    path = write(tmp_path, search=text)
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    assert "short-secret" not in str(exc.value)
    assert "teams.search.keys.0 (line 3)" in str(exc.value)


@pytest.fixture(scope="module")
def merged_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenants")
    ups = {name: Upstream() for name in URLS}  # one server per file: two files cannot share one
    gw = Gateway(write(tmp, urls={name: up.url for name, up in ups.items()}))
    yield gw
    gw.stop()
    for up in ups.values():
        up.stop()


@pytest.mark.parametrize(
    ("team", "route", "status"),
    [
        ("search", "search-chat", 200), ("search", "general", 200), ("search", "research-chat", 403),
        ("research", "research-chat", 200), ("research", "general", 200),
        ("research", "search-chat", 200),  # shared by the platform
        ("ops", "general", 200), ("ops", "search-chat", 403), ("ops", "research-chat", 403),
    ],
)  # fmt: skip
def test_real_requests_show_isolation_between_teams(merged_gateway, team, route, status):
    r = httpx.post(merged_gateway.url + "/chat/completions", json=chat_body(route),
                   headers={"Authorization": f"Bearer {KEYS[team]}"}, timeout=30)  # fmt: skip
    assert r.status_code == status, r.text
    if status == 403:
        assert f"team {team!r} may not use route {route!r}" in r.json()["error"]["message"]


def test_each_team_lists_only_the_models_it_may_use(merged_gateway):
    r = httpx.get(merged_gateway.url + "/models", headers={"Authorization": f"Bearer {KEYS['search']}"})
    assert sorted(m["id"] for m in r.json()["data"]) == ["general", "search-chat"]


def test_policy_violations_in_a_team_file_name_that_file_and_line(tmp_path):
    search = SEARCH.format(key=KEYS["search"], url=URLS["search"]).replace(
        'urls: ["http://127.0.0.1:10/v1"]}',
        'urls: ["http://127.0.0.1:10/v1"], runs_on: {instance_type: g5.xlarge, region: ap-south-1}}',
    )
    path = write(tmp_path, search=search)
    text = path.read_text().replace("teams:\n", "policy: {regions: [us-east-1]}\nteams:\n", 1)
    path.write_text(text)
    done = cli("policy", "check", "-f", str(path), check=False)
    assert done.returncode == 1
    assert f"{tmp_path}/teams.d/search.yaml:5: deployments.search-llm.runs_on.region" in done.stdout
    assert "actual: ap-south-1" in done.stdout


def test_a_team_file_speaks_only_for_the_team_it_is_named_after_and_adds_to_the_platform(tmp_path):
    # A file named evil.yaml cannot claim team ops (which the platform declared) and replace its keys.
    path = write(tmp_path, evil='team: ops\nteams: {ops: {keys: ["evil-key-0123456789abcdef"]}}\n')
    with pytest.raises(ConfigError) as err:
        load_fleet(path)
    assert "evil.yaml" in str(err.value) and "must be named ops.yaml" in str(err.value)
    # ops.yaml may add a key and tags; the platform's key stays, and its tags win.
    (tmp_path / "teams.d" / "evil.yaml").unlink()
    (tmp_path / "fleet.yaml").write_text((tmp_path / "fleet.yaml").read_text().replace(
        f'ops: {{keys: ["{KEYS["ops"]}"]}}', f'ops: {{keys: ["{KEYS["ops"]}"], tags: {{team: ops}}}}'))  # fmt: skip
    (tmp_path / "teams.d" / "ops.yaml").write_text(
        'team: ops\nteams: {ops: {keys: ["ops-second-key-0123456789"], tags: {team: search, own: x}}}\n'
    )
    ops = load_fleet(tmp_path / "fleet.yaml").teams["ops"]
    assert [k.get_secret_value() for k in ops.keys] == [KEYS["ops"], "ops-second-key-0123456789"]
    assert ops.tags == {"team": "ops", "own": "x"}


def test_a_team_made_later_through_the_admin_api_gets_the_platforms_routes_only(tmp_path, start):
    path = write(tmp_path, urls={name: start(Upstream).url for name in URLS})
    path.write_text(path.read_text().replace("state:", "auth: {admin_key: admin-key-0123456789abcdef}\nstate:"))
    gw = start(Gateway, path)
    admin = {"Authorization": "Bearer admin-key-0123456789abcdef"}
    assert httpx.post(gw.base + "/admin/teams", json={"name": "late"}, headers=admin).status_code == 201
    key = httpx.post(gw.base + "/admin/teams/late/keys", headers=admin).json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    models = sorted(m["id"] for m in httpx.get(gw.url + "/models", headers=auth).json()["data"])
    assert models == ["general"]
    assert httpx.post(gw.url + "/chat/completions", json=chat_body("search-chat"), headers=auth).status_code == 403


# --- what a team file may read: no environment variable or AWS secret the platform did not name ---------------


def test_a_team_file_cannot_read_the_platforms_environment(tmp_path):
    search = SEARCH.format(key=KEYS["search"], url="http://127.0.0.1:10/v1?k=${MODELFLEET_ADMIN_KEY}")
    path = write(tmp_path, search=search)
    with pytest.raises(ConfigError) as exc:
        load_fleet(path, env={"MODELFLEET_ADMIN_KEY": "platform-admin-secret-value"})
    assert exc.value.file == str(tmp_path / "teams.d" / "search.yaml")
    assert "deployments.search-llm.urls.0 (line 5): a team file reads only the environment variables" in str(exc.value)
    assert "(include.env: none); ${MODELFLEET_ADMIN_KEY} is not one of them" in str(exc.value)
    assert "platform-admin-secret-value" not in str(exc.value)


def test_a_team_file_reads_the_environment_variables_the_platform_names_for_it(tmp_path):
    search = SEARCH.format(key="${SEARCH_KEY}", url=URLS["search"])
    path = write(tmp_path, search=search)
    path.write_text(path.read_text().replace("state:", "  env: {search: [SEARCH_KEY]}\nstate:", 1))
    env = {"SEARCH_KEY": KEYS["search"], "RESEARCH_KEY": KEYS["research"]}
    fleet = load_fleet(path, env=env)
    assert fleet.teams["search"].keys[0] is not None
    # research is not given SEARCH_KEY: reading it into its own key list is refused
    research = RESEARCH.format(key="${SEARCH_KEY}", url=URLS["research"])
    (tmp_path / "teams.d" / "research.yaml").write_text(research)
    with pytest.raises(ConfigError) as exc:
        load_fleet(path, env=env)
    assert exc.value.file == str(tmp_path / "teams.d" / "research.yaml")
    assert "teams.research.keys.0 (line 3)" in str(exc.value) and "${SEARCH_KEY} is not one of them" in str(exc.value)


def test_a_team_file_references_only_the_aws_secrets_the_platform_names_for_it(tmp_path):
    search = SEARCH.format(key=KEYS["search"], url=URLS["search"]).replace(
        'urls: ["http://127.0.0.1:10/v1"]}', 'urls: ["http://127.0.0.1:10/v1"], api_key: "aws-secret://platform/admin"}'
    )
    path = write(tmp_path, search=search)
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    assert exc.value.file == str(tmp_path / "teams.d" / "search.yaml")
    assert "deployments.search-llm.api_key (line 5): a team file references only the AWS secrets" in str(exc.value)
    assert "(include.secrets: none); 'platform/admin' is not one of them" in str(exc.value)
    path.write_text(path.read_text().replace("state:", '  secrets: {search: ["teams/search/*"]}\nstate:', 1))
    with pytest.raises(ConfigError, match="'platform/admin' is not one of them"):
        load_fleet(path)
    (tmp_path / "teams.d" / "search.yaml").write_text(search.replace("platform/admin", "teams/search/vllm#key"))
    assert load_fleet(path).deployments["search-llm"].api_key is not None  # resolved at start-up, not here


def test_the_platform_names_only_teams_it_has_in_env_and_secrets(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("state:", "  env: {nobody: [X]}\nstate:", 1))
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    assert exc.value.file == str(path)
    assert "include.env.nobody (line 6): unknown team 'nobody'" in str(exc.value)


# --- what a team's routes may reach ---------------------------------------------------------------------------


def test_a_team_route_cannot_reach_a_platform_deployment_the_platform_did_not_share(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("  share_deployments: {shared: [research]}\n", ""))
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    assert exc.value.file == str(tmp_path / "teams.d" / "research.yaml")
    assert (
        "routes.research-chat.deployments (line 7): deployment 'shared' is the platform fleet's "
        f"({path}) and not shared with team 'research'"
    ) in str(exc.value)


def test_a_team_route_falls_back_only_to_routes_the_team_may_use(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace('ops: {keys: ["', 'search: {routes: []}\n  ops: {keys: ["'))
    text = SEARCH.format(key=KEYS["search"], url=URLS["search"]).replace(
        "{deployments: [search-llm]}", "{deployments: [search-llm], fallbacks: [general]}"
    )
    (tmp_path / "teams.d" / "search.yaml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    assert exc.value.file == str(tmp_path / "teams.d" / "search.yaml")
    assert "routes.search-chat.fallbacks (line 7): route 'general' belongs to the platform fleet" in str(exc.value)
    assert "team 'search' may not use it" in str(exc.value)


@pytest.mark.parametrize(
    ("research", "field", "identity"),
    [
        ("research-llm: {kind: openai, urls: ['http://127.0.0.1:10/v1/']}", "urls.0", "server http://127.0.0.1:10/v1"),
        ("research-llm: {kind: sagemaker, endpoint: search-ep, region: eu-west-1, container: messages}",
         "endpoint", "SageMaker endpoint 'search-ep' in eu-west-1"),
    ],
    ids=["same-url", "same-endpoint"],
)  # fmt: skip
def test_two_teams_cannot_deploy_the_same_endpoint_or_server(tmp_path, research, field, identity):
    search = SEARCH.format(key=KEYS["search"], url=URLS["search"]).replace(
        'search-llm: {kind: openai, urls: ["http://127.0.0.1:10/v1"]}',
        'search-llm: {kind: openai, urls: ["http://127.0.0.1:10/v1"]}\n'
        "  search-sm: {kind: sagemaker, endpoint: search-ep, region: eu-west-1, container: messages}",
    )
    text = f"team: research\ndeployments:\n  {research}\nroutes:\n  research-chat: {{deployments: [research-llm]}}\n"
    path = write(tmp_path, search=search, research=text)
    with pytest.raises(ConfigError) as exc:
        load_fleet(path)
    message = str(exc.value)
    search_file, research_file = tmp_path / "teams.d" / "search.yaml", tmp_path / "teams.d" / "research.yaml"
    assert exc.value.file in (str(search_file), str(research_file)), (
        message
    )  # the later file: research.yaml is read first
    assert f"the {identity} is already deployment" in message
    assert f"deployments.research-llm.{field} (line 3)" in message
    assert str(search_file) in message and str(research_file) in message  # both files named


def test_a_team_cannot_deploy_the_platforms_server_under_its_own_name(tmp_path):
    search = SEARCH.format(key=KEYS["search"], url=URLS["platform"])
    with pytest.raises(ConfigError) as exc:
        load_fleet(write(tmp_path, search=search))
    assert "the server http://127.0.0.1:9/v1 is already deployment 'shared' in" in str(exc.value)
    assert str(tmp_path / "fleet.yaml") in str(exc.value)


@pytest.mark.parametrize("text", ["team: search\ndeployments: [unclosed\n", "- a list\n", "# nothing\n"])
def test_a_team_file_is_read_by_the_loaders_own_reader(tmp_path, text):
    from modelfleet.config import parse_fleet

    with pytest.raises(ConfigError) as as_fleet:
        parse_fleet(text, file="fleet.yaml", env={})
    with pytest.raises(ConfigError) as as_team:
        load_fleet(write(tmp_path, search=text))
    assert as_team.value.file == str(tmp_path / "teams.d" / "search.yaml")
    expected = [
        p.replace("`deployments` and `routes`", "`team`, `deployments` and `routes`") for p in as_fleet.value.problems
    ]
    assert as_team.value.problems == expected
