"""Platform and team fleets: a platform fleet `include:`s team files and they merge into one Fleet.

    # fleet.yaml (the platform)                # teams.d/search.yaml (a team)
    include:                                   team: search
      files: [teams.d/]                        teams:
      team_settings: [keys, limits, tags]        search: {keys: ["${SEARCH_KEY}"], tags: {cost-center: cc-7}}
      share: {search-chat: [research]}         deployments: {search-llm: {...}}
      share_deployments: {embed: "*"}          routes: {search-chat: {deployments: [search-llm, embed]}}
      env: {search: [SEARCH_KEY]}
      secrets: {search: ["teams/search/*"]}

A team file declares only its own deployments and routes, and its own team's settings that the
platform allows (`team_settings`). It cannot set `server`, `state`, `auth`, `policy` or `include`,
declare another team, redefine another file's deployment, or reach one: its routes send traffic
to its own deployments and to the platform deployments `share_deployments` gives it, and fall back
only to routes it may use. Two files' deployments cannot be the same SageMaker endpoint or server
URL, nor share an execution role or a model-cache claim. A team file reads no environment variable
and no secret unless the platform names it (`env`, `secrets`): the gateway's environment is the
platform's. Its files (chat templates, models) are read only from its own folder, and its AWS URLs
are SageMaker's own or `aws_endpoints`. Every error names the file.

Isolation: a team may use its own routes, the platform's routes (when the platform gives it `*`) and
routes the platform `share`s with it; this is written into each team's `routes`, so the gateway's
access check (access/directory.py) enforces it with no code of its own.
"""

from __future__ import annotations

import copy
import glob
import ipaddress
import re
import socket
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from modelfleet.config.kubernetes import KubernetesDeployment
from modelfleet.config.loader import _describe, _where, interpolate, read_yaml
from modelfleet.config.schema import (
    NAME_PATTERN,
    Deployment,
    Fleet,
    Include,
    OpenAIDeployment,
    SageMakerDeployment,
    Team,
    _include,
)
from modelfleet.errors import ConfigError
from modelfleet.secret_refs import PREFIX

PLATFORM_ONLY = ("server", "state", "auth", "policy", "include")
TEAM_FILE_FIELDS = ("team", "teams", "deployments", "routes")
OWNED = ("deployments", "routes")


@dataclass(frozen=True, slots=True)
class Owner:
    file: str
    team: str | None  # None: the platform


def ownership(fleet: Fleet) -> dict[str, Owner]:
    """`deployments.NAME` / `routes.NAME` / `teams.NAME` -> the file that declared it (empty without includes)."""
    return dict(getattr(fleet, "_owners", None) or {})


class _Problems:
    def __init__(self) -> None:
        self.by_file: dict[str, list[str]] = {}

    def add(self, file: str, message: str) -> None:
        self.by_file.setdefault(file, []).append(message)

    def raise_any(self) -> None:
        if not self.by_file:
            return
        if len(self.by_file) == 1:
            [(file, problems)] = self.by_file.items()
            raise ConfigError(problems, file=file)
        raise ConfigError([f"{f}: {p}" for f, problems in self.by_file.items() for p in problems])


def merge_includes(data: dict[str, Any], lines: dict, *, file: str, env: Any) -> Fleet:
    problems = _Problems()
    try:
        include = Include.model_validate(_include(data["include"]))
    except ValidationError as exc:
        raise ConfigError(
            [_describe({**e, "loc": ("include", *e["loc"])}, lines) for e in exc.errors()], file=file
        ) from None

    merged = copy.deepcopy(data)
    owners: dict[str, Owner] = {}
    file_lines: dict[str, dict] = {file: lines}
    for section in (*OWNED, "teams"):
        for name in merged.get(section) or {}:
            owners[f"{section}.{name}"] = Owner(file, None)
    team_files: dict[str, str] = {}  # team -> its file
    own_routes: dict[str, set[str]] = {}
    loaded: list[tuple[dict, str, str, dict]] = []

    at = ("include",) if isinstance(data["include"], list | str) else ("include", "files")  # the shorthand: a list
    for path in _expand(include.files, at, Path(file).parent, file, lines, problems):
        doc, flines = _read(path, problems)
        if doc is None:
            continue
        file_lines[path] = flines
        team = _team_of(doc, path, flines, team_files, problems)
        if team is None:
            continue
        doc = _references(doc, team, path, flines, env, include, problems)
        _confine(doc, team, path, flines, include, problems)
        team_files[team] = path
        own_routes[team] = set()
        for key in doc:
            if key in PLATFORM_ONLY:
                problems.add(
                    path,
                    f"{_at(key, flines)}: a team file cannot change `{key}`; it belongs to the platform fleet ({file})",
                )
            elif key not in TEAM_FILE_FIELDS:
                problems.add(
                    path, f"{_at(key, flines)}: unknown field {key!r}; a team file has {', '.join(TEAM_FILE_FIELDS)}"
                )
        _merge_team_settings(doc, team, path, flines, include, merged, owners, problems)
        for section in OWNED:
            declared = doc.get(section) or {}
            if not isinstance(declared, dict):
                problems.add(path, f"{_at(section, flines)}: expected a mapping of names to {section}")
                continue
            for name, spec in declared.items():
                where = f"{section}.{name}"
                if where in owners:
                    other = owners[where]
                    by = f"team {other.team!r} ({other.file})" if other.team else f"the platform fleet ({other.file})"
                    problems.add(
                        path,
                        f"{_at((section, name), flines)}: already declared by {by}; "
                        "a team file declares only its own deployments and routes: choose another name",
                    )
                    continue
                owners[where] = Owner(path, team)
                merged.setdefault(section, {})[name] = spec
                if section == "routes":
                    own_routes[team].add(name)
        loaded.append((doc, team, path, flines))
    for doc, team, path, flines in loaded:  # once every file is in, so the order of the files does not matter
        usable = _usable_routes(team, merged, owners, include, own_routes)
        _check_route_targets(doc, team, path, flines, owners, include, usable, problems)
    problems.raise_any()

    _check_share(include, merged, owners, file, lines, problems)
    problems.raise_any()
    _isolate(merged, include, owners, own_routes)
    try:
        fleet = Fleet.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors():
            owner_file = _owner_file(err, owners, file)
            problems.add(owner_file, _describe(err, file_lines.get(owner_file, {})))
        problems.raise_any()
        raise
    _check_same_targets(fleet, owners, file, file_lines, problems)
    problems.raise_any()
    fleet._owners = owners  # frozen models still take private attributes
    return fleet


def included_files(data: dict[str, Any], file: str) -> list[str]:
    """The team files a platform fleet's `include:` reads (as merge_includes expands them), for renderers."""
    include = Include.model_validate(_include(data["include"]))
    at = ("include",) if isinstance(data["include"], list | str) else ("include", "files")
    return _expand(include.files, at, Path(file).parent, file, {}, _Problems())


def _expand(entries: list[str], at: tuple, base: Path, file: str, lines: dict, problems: _Problems) -> list[str]:
    found: list[str] = []
    for i, entry in enumerate(entries):
        target = base / entry
        if target.is_dir():  # a folder may be empty: a platform with no teams yet
            matches = sorted([*glob.glob(str(target / "*.yaml")), *glob.glob(str(target / "*.yml"))])
            found.extend(m for m in matches if m not in found and m != file)
            continue
        if any(c in entry for c in "*?["):
            matches = sorted(glob.glob(str(target)))
        else:
            matches = [str(target)] if target.is_file() else []
        if not matches:
            problems.add(
                file,
                f"{_at((*at, i), lines)}: {entry!r} matches no file "
                f"(relative to {base}); expected a file, a glob or a folder of .yaml files",
            )
        found.extend(m for m in matches if m not in found and m != file)
    return found


def _read(path: str, problems: _Problems) -> tuple[dict | None, dict]:
    """The team file as written (the loader's own reader), before any ${ENV} is expanded."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return read_yaml(text, file=path, expected="a mapping with `team`, `deployments` and `routes`")
    except OSError as exc:
        problems.add(path, f"cannot read the team file: {exc.strerror or exc}")
    except ConfigError as exc:
        for p in exc.problems:
            problems.add(path, p)
    return None, {}


def _references(doc: dict, team: str, path: str, lines: dict, env: Any, include: Include, problems: _Problems) -> dict:
    """Expand the ${ENV} and check the aws-secret:// references the platform lets this team's file use.

    The gateway's environment and AWS credentials are the platform's: a team file that could read
    ${MODELFLEET_ADMIN_KEY} into a URL or an api_key it controls would send it to its own server."""
    allowed_env = include.env.get(team, [])
    allowed_secrets = include.secrets.get(team, [])

    def may_read(name: str) -> str | None:
        if name in allowed_env:
            return None
        return (
            f"a team file reads only the environment variables the platform fleet lets team {team!r} read "
            f"(include.env: {', '.join(allowed_env) or 'none'}); ${{{name}}} is not one of them"
        )

    found: list[str] = []
    doc = interpolate(doc, env, lines, found, may_read)
    for p in found:
        problems.add(path, p)

    def walk(value: Any, at: tuple) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*at, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*at, i))
        elif isinstance(value, str) and value.strip().lower().startswith(PREFIX):
            ref = urlsplit(value.strip())
            name = (ref.netloc + ref.path).strip("/")
            if not any(fnmatchcase(name, pattern) for pattern in allowed_secrets):
                problems.add(
                    path,
                    f"{_at(at, lines)}: a team file references only the AWS secrets the platform fleet lets "
                    f"team {team!r} read (include.secrets: {', '.join(allowed_secrets) or 'none'}); "
                    f"{name!r} is not one of them",
                )

    walk(doc, ())
    return doc


# Deployment fields that name a file the gateway reads: a chat template is rendered into every prompt
# (sent to the team's own endpoint), so `/proc/self/environ` there would hand it the gateway's secrets.
FILE_FIELDS = ("chat_template", "model_path")
# Where the gateway sends requests signed with its AWS credentials (the key id and session token go along).
AWS_URL_FIELDS = ("endpoint_url", "runtime_url")
# SageMaker's own API hosts (and VPC endpoints to them) only: much of *.amazonaws.com is someone's own
# server (API Gateway, load balancers, EC2 public names), where a team would read the signed headers.
_AWS_HOST = re.compile(
    r"^([a-z0-9-]+\.)?(api|runtime)(-fips)?\.sagemaker\.[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d\.(vpce\.)?"
    r"amazonaws\.com(\.cn)?$"
)


def _confine(doc: dict, team: str, path: str, lines: dict, include: Include, problems: _Problems) -> None:
    """A team file's deployments read files only beside it (teams.d/, resolved from the team file, symlinks
    followed), mount only the Kubernetes Secrets include.secrets names for the team, and send AWS-signed
    requests only to AWS or to URLs the platform lists (include.aws_endpoints)."""
    folder = Path(path).parent.resolve()
    deployments = doc.get("deployments")
    for name, spec in deployments.items() if isinstance(deployments, dict) else ():
        if not isinstance(spec, dict):
            continue
        for field in FILE_FIELDS:
            value = spec.get(field)
            if not isinstance(value, str):
                continue
            target = (folder / value).resolve()  # an absolute value stays absolute
            if not target.is_relative_to(folder):
                problems.add(
                    path,
                    f"{_at(('deployments', name, field), lines)}: a team file's deployments read files only in "
                    f"its own folder ({folder}); {value!r} is outside it: put the file beside the team file",
                )
            else:
                spec[field] = str(target)  # relative to the team file, not to where the gateway runs
        ref = spec.get("hf_token_secret") if spec.get("kind") == "kubernetes" else None
        secret = ref.get("name") if isinstance(ref, dict) else None
        allowed = include.secrets.get(team, [])
        if isinstance(secret, str) and not any(fnmatchcase(secret, p) for p in allowed):
            # the team's pod (its own image) would mount that Secret: the same rule as aws-secret:// names
            problems.add(
                path,
                f"{_at(('deployments', name, 'hf_token_secret', 'name'), lines)}: a team file references only the "
                f"secrets the platform fleet lets team {team!r} read (include.secrets: {', '.join(allowed) or 'none'})"
                f"; Kubernetes Secret {secret!r} is not one of them",
            )
        for field in AWS_URL_FIELDS:
            value = spec.get(field)
            if not isinstance(value, str):
                continue
            u = urlsplit(value.strip())
            aws = u.scheme.lower() == "https" and _AWS_HOST.match((u.hostname or "").lower()) is not None
            if not aws and value.strip().rstrip("/") not in {e.rstrip("/") for e in include.aws_endpoints}:
                problems.add(
                    path,
                    f"{_at(('deployments', name, field), lines)}: the gateway signs requests to this URL with its "
                    "AWS credentials; a team file may name SageMaker's own "
                    "(https://runtime.sagemaker.REGION.amazonaws.com) or a URL the platform lists "
                    f"in include.aws_endpoints ({', '.join(include.aws_endpoints) or 'none'}); got {value!r}",
                )


def _team_of(doc: dict, path: str, lines: dict, team_files: dict[str, str], problems: _Problems) -> str | None:
    team = doc.get("team")
    if not isinstance(team, str) or not re.match(NAME_PATTERN, team):
        problems.add(path, f"{_at('team', lines)}: a team file names its team, e.g. `team: search`; got {team!r}")
        return None
    if team in team_files:
        problems.add(path, f"{_at('team', lines)}: team {team!r} already has a file: {team_files[team]}")
        return None
    if Path(path).stem != team:  # which file speaks for which team is the platform repository's to review
        problems.add(path, f"{_at('team', lines)}: team {team!r}'s file must be named {team}.yaml, so the "
                           "platform's reviewers see whose file it is")  # fmt: skip
        return None
    return team


def _merge_into_platform_team(platform: dict, team: dict) -> None:
    """A team file adds to what the platform said of its team, never takes it away: the platform's keys
    stay (the team's are added), the platform's tags win, and the platform's limits are ceilings."""
    for key, value in team.items():
        mine = platform.get(key)
        if key == "keys" and isinstance(mine, list) and isinstance(value, list):
            platform[key] = [*mine, *(k for k in value if k not in mine)]
        elif key == "tags" and isinstance(mine, dict) and isinstance(value, dict):
            platform[key] = {**value, **mine}
        elif key == "limits" and isinstance(mine, dict) and isinstance(value, dict):
            platform[key] = {**value, **{k: min(v, value.get(k) or v) for k, v in mine.items() if v is not None}}
        elif key == "timeout" and mine is not None:
            continue  # the platform's cap stands
        else:
            platform[key] = value


def _merge_team_settings(
    doc: dict,
    team: str,
    path: str,
    lines: dict,
    include: Include,
    merged: dict,
    owners: dict[str, Owner],
    problems: _Problems,
) -> None:
    teams = doc.get("teams") or {}
    if not isinstance(teams, dict):
        problems.add(path, f"{_at('teams', lines)}: expected a mapping with this file's team, {team!r}")
        return
    for name, settings in teams.items():
        if name != team:
            problems.add(
                path,
                f"{_at(('teams', name), lines)}: this is team {team!r}'s file; it cannot declare "
                f"or change team {name!r}",
            )
            continue
        settings = settings or {}
        if not isinstance(settings, dict):
            problems.add(path, f"{_at(('teams', name), lines)}: expected a mapping of the team's settings")
            continue
        for key in settings:
            if key == "routes":
                problems.add(
                    path,
                    f"{_at(('teams', name, key), lines)}: a team's routes are its own routes and "
                    "those the platform shares with it (include.share); leave routes out",
                )
            elif key not in include.team_settings:
                problems.add(
                    path,
                    f"{_at(('teams', name, key), lines)}: the platform fleet does not let team files "
                    f"set {key!r}; allowed: {', '.join(include.team_settings)} "
                    "(include.team_settings)",
                )
        allowed = {k: v for k, v in settings.items() if k in include.team_settings}
        try:  # the team file's own values first, so a mistake names the team file (and never meets the platform's)
            Team.model_validate(allowed)
        except ValidationError as exc:
            for err in exc.errors():
                problems.add(path, _describe({**err, "loc": ("teams", team, *err["loc"])}, lines))
            continue
        _merge_into_platform_team(merged.setdefault("teams", {}).setdefault(team, {}), allowed)
    merged.setdefault("teams", {}).setdefault(team, {})
    owners.setdefault(f"teams.{team}", Owner(path, team))


def _usable_routes(
    team: str, merged: dict, owners: dict[str, Owner], include: Include, own_routes: dict[str, set[str]]
) -> set[str]:
    """The routes the team may use: its own, the shared ones, and the platform's it is given."""
    listed = (merged.get("teams") or {}).get(team, {}).get("routes", "*")
    platform = {n for n in merged.get("routes") or {} if owners[f"routes.{n}"].team is None}
    given = platform if listed == "*" else set(listed if isinstance(listed, list) else [listed]) & platform
    return given | own_routes.get(team, set()) | {r for r in include.share if _shared(include.share, r, team)}


def _check_route_targets(
    doc: dict,
    team: str,
    path: str,
    lines: dict,
    owners: dict[str, Owner],
    include: Include,
    usable: set[str],
    problems: _Problems,
) -> None:
    """A team's routes send traffic to its own deployments and to those the platform shares with it,
    and fall back only to routes the team may use itself."""
    routes = doc.get("routes") or {}
    for name, spec in routes.items() if isinstance(routes, dict) else ():
        if not isinstance(spec, dict):
            continue
        deps = spec.get("deployments")
        targets = deps if isinstance(deps, dict | list) else [deps] if isinstance(deps, str) else []
        for dep in targets:
            other = owners.get(f"deployments.{dep}")
            if other is None or other.team == team or _shared(include.share_deployments, dep, team):
                continue  # unknown deployments: the schema says so, with the names it knows
            where = f"{_at(('routes', name, 'deployments'), lines)}: deployment {dep!r}"
            if other.team is None:
                problems.add(
                    path,
                    f"{where} is the platform fleet's ({other.file}) and not shared with team {team!r}; "
                    "use a platform route, or ask for it in include.share_deployments",
                )
            else:
                problems.add(
                    path,
                    f"{where} belongs to team {other.team!r} ({other.file}); route to it through a route "
                    "that team shares with you (include.share in the platform fleet)",
                )
        fallbacks = spec.get("fallbacks")
        for fb in fallbacks if isinstance(fallbacks, list) else [fallbacks] if isinstance(fallbacks, str) else []:
            other = owners.get(f"routes.{fb}")
            if other is None or fb in usable:
                continue
            by = f"team {other.team!r} ({other.file})" if other.team else f"the platform fleet ({other.file})"
            problems.add(
                path,
                f"{_at(('routes', name, 'fallbacks'), lines)}: route {fb!r} belongs to {by} and team "
                f"{team!r} may not use it; fall back only to routes the team may use",
            )


def _shared(share: dict[str, Any], name: str, team: str) -> bool:
    teams = share.get(name)
    return teams == "*" or (isinstance(teams, list) and team in teams)


def _identities(dep: Deployment) -> list[tuple[str, tuple]]:
    """What a deployment reaches outside modelfleet: (identity, the field that says so)."""
    if isinstance(dep, SageMakerDeployment):  # one name in one region is one endpoint, whichever URL reaches it
        found: list[tuple[str, tuple]] = [
            (f"SageMaker endpoint {dep.endpoint.lower()!r} in {dep.region.strip().lower()}", ("endpoint",))
        ]
        if dep.create is not None:  # its container runs with this role: another file's image would get its rights
            found.append((f"SageMaker execution role {dep.create.role_arn}", ("create", "role_arn")))
        return found
    if isinstance(dep, KubernetesDeployment) and dep.model_cache is not None and dep.model_cache.claim:
        # a shared writable model cache: another file's pods could replace the weights this one serves
        claim = f"Kubernetes volume claim {dep.model_cache.claim!r} in namespace {dep.namespace}"
        return [(claim, ("model_cache", "claim"))]
    if isinstance(dep, OpenAIDeployment):
        return [(f"server {_canonical(url)}", ("urls", i)) for i, url in enumerate(dep.urls)]
    return []


def _canonical(url: str) -> str:
    u = urlsplit(url)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme.lower())
    return f"{u.scheme.lower()}://{_host((u.hostname or '').lower())}:{port}{u.path.rstrip('/')}"


def _host(host: str) -> str:
    """One spelling per IP address: 127.1, 0x7f000001, 2130706433 and ::ffff:127.0.0.1 are 127.0.0.1."""
    try:
        ip = ipaddress.ip_address(host)
        mapped = getattr(ip, "ipv4_mapped", None)
        return str(mapped or ip)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host):  # the numeric forms inet_aton (and so the connection) reads
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    return host


def _check_same_targets(
    fleet: Fleet, owners: dict[str, Owner], platform: str, file_lines: dict[str, dict], problems: _Problems
) -> None:
    """Two files cannot run the same endpoint or server: starting, stopping and billing it would be shared."""
    seen: dict[str, tuple[str, tuple, str]] = {}  # identity -> (deployment, field, file)
    for name, dep in fleet.deployments.items():
        owner = owners.get(f"deployments.{name}")
        file = owner.file if owner else platform
        for identity, field in _identities(dep):
            first = seen.setdefault(identity, (name, field, file))
            if first[2] == file:
                continue
            other_at = _at(("deployments", first[0], *first[1]), file_lines.get(first[2], {}))
            problems.add(
                file,
                f"{_at(('deployments', name, *field), file_lines.get(file, {}))}: the {identity} is already "
                f"deployment {first[0]!r} in {first[2]} ({other_at}); each file's deployments reach their own "
                "endpoints and servers: use another one, or a route the other file shares",
            )


def _check_share(
    include: Include, merged: dict, owners: dict[str, Owner], file: str, lines: dict, problems: _Problems
) -> None:
    teams = set(merged.get("teams") or {})
    for section, kind in (("share", "routes"), ("share_deployments", "deployments")):
        for name, with_ in getattr(include, section).items():
            where = _at(("include", section, name), lines)
            if f"{kind}.{name}" not in owners:
                known = ", ".join(sorted(merged.get(kind) or {}))
                problems.add(file, f"{where}: unknown {kind[:-1]} {name!r}; {kind}: {known}")
            for t in with_ if isinstance(with_, list) else ():
                if t not in teams:
                    problems.add(file, f"{where}: unknown team {t!r}; teams: {', '.join(sorted(teams))}")
    for section in ("env", "secrets"):
        for t in getattr(include, section):
            if t not in teams:
                where = _at(("include", section, t), lines)
                problems.add(file, f"{where}: unknown team {t!r}; teams: {', '.join(sorted(teams))}")


def _isolate(merged: dict, include: Include, owners: dict[str, Owner], own_routes: dict[str, set[str]]) -> None:
    """Write each team's usable routes: its own, the platform's, and those shared with it."""
    platform_routes = {n for n in merged.get("routes") or {} if owners[f"routes.{n}"].team is None}
    for team, spec in (merged.get("teams") or {}).items():
        shared = {r for r in include.share if _shared(include.share, r, team)}
        listed = spec.get("routes", "*")
        base = platform_routes if listed == "*" else set(listed if isinstance(listed, list) else [listed])
        spec["routes"] = sorted(base | own_routes.get(team, set()) | shared)


def _owner_file(err: Any, owners: dict[str, Owner], platform: str) -> str:
    loc = err["loc"]
    if len(loc) >= 2 and f"{loc[0]}.{loc[1]}" in owners:
        return owners[f"{loc[0]}.{loc[1]}"].file
    msg = str(err.get("ctx", {}).get("error", err.get("msg", "")))
    if m := re.match(r"^(\w+)\.([^.:\s]+)", msg):
        owner = owners.get(f"{m.group(1)}.{m.group(2)}")
        if owner is not None:
            return owner.file
    return platform


def _at(path: str | tuple, lines: dict) -> str:
    """`a.b.c (line N)`, as the loader says it; a path the file does not have (yet) is named whole."""
    parts = tuple(path.split(".")) if isinstance(path, str) else path
    return _where(parts, lines) if parts in lines else ".".join(str(p) for p in parts)
