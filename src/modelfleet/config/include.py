"""Platform and team fleets: a platform fleet `include:`s team files and they merge into one Fleet.

    # fleet.yaml (the platform)                # teams.d/search.yaml (a team)
    include:                                   team: search
      files: [teams.d/]                        teams:
      team_settings: [keys, limits, tags]        search: {keys: ["${SEARCH_KEY}"], tags: {cost-center: cc-7}}
      share: {search-chat: [research]}         deployments: {search-llm: {...}}
                                               routes: {search-chat: {deployments: [search-llm]}}

A team file declares only its own deployments and routes, and its own team's settings that the
platform allows (`team_settings`). It cannot set `server`, `state`, `auth`, `policy` or `include`,
declare another team, or redefine or route to another team's deployment. Every error names the file.

Isolation: a team may use its own routes, the platform's routes (when the platform gives it `*`) and
routes the platform `share`s with it; this is written into each team's `routes`, so the gateway's
access check (access/directory.py) enforces it with no code of its own.
"""

from __future__ import annotations

import copy
import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelfleet.config.schema import NAME_PATTERN, Fleet, Include, _include
from modelfleet.errors import ConfigError

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
    from modelfleet.config.loader import _describe

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
        doc, flines = _read(path, env, problems)
        if doc is None:
            continue
        file_lines[path] = flines
        team = _team_of(doc, path, flines, team_files, problems)
        if team is None:
            continue
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
        _check_route_targets(doc, team, path, flines, owners, include, problems)
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


def _read(path: str, env: Any, problems: _Problems) -> tuple[dict | None, dict]:
    from modelfleet.config.loader import _interpolate, _line_map

    try:
        text = Path(path).read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except OSError as exc:
        problems.add(path, f"cannot read the team file: {exc.strerror or exc}")
        return None, {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problems.add(path, f"{where}not valid YAML: {getattr(exc, 'problem', exc)}")
        return None, {}
    if not isinstance(doc, dict):
        problems.add(path, "expected a mapping with `team`, `deployments` and `routes` at the top level")
        return None, {}
    lines = _line_map(root)
    env_problems: list[str] = []
    doc = _interpolate(doc, (), env, lines, env_problems)
    for p in env_problems:
        problems.add(path, p)
    return doc, lines


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
        _merge_into_platform_team(merged.setdefault("teams", {}).setdefault(team, {}), allowed)
    merged.setdefault("teams", {}).setdefault(team, {})
    owners.setdefault(f"teams.{team}", Owner(path, team))


def _check_route_targets(
    doc: dict, team: str, path: str, lines: dict, owners: dict[str, Owner], include: Include, problems: _Problems
) -> None:
    """A team's routes send traffic to its own or the platform's deployments, never to another team's."""
    routes = doc.get("routes") or {}
    for name, spec in routes.items() if isinstance(routes, dict) else ():
        if not isinstance(spec, dict):
            continue
        deps = spec.get("deployments")
        targets = deps if isinstance(deps, dict | list) else [deps] if isinstance(deps, str) else []
        for dep in targets:
            other = owners.get(f"deployments.{dep}")
            if other is not None and other.team not in (None, team):
                problems.add(
                    path,
                    f"{_at(('routes', name, 'deployments'), lines)}: deployment {dep!r} belongs to "
                    f"team {other.team!r} ({other.file}); route to it through a route that team "
                    "shares with you (include.share in the platform fleet)",
                )
        fallbacks = spec.get("fallbacks")
        for fb in fallbacks if isinstance(fallbacks, list) else [fallbacks] if isinstance(fallbacks, str) else []:
            other = owners.get(f"routes.{fb}")
            if other is not None and other.team not in (None, team) and not _shared(include, fb, team):
                problems.add(
                    path,
                    f"{_at(('routes', name, 'fallbacks'), lines)}: route {fb!r} belongs to team "
                    f"{other.team!r} ({other.file}) and is not shared with team {team!r}",
                )


def _shared(include: Include, route: str, team: str) -> bool:
    teams = include.share.get(route)
    return teams == "*" or (isinstance(teams, list) and team in teams)


def _check_share(
    include: Include, merged: dict, owners: dict[str, Owner], file: str, lines: dict, problems: _Problems
) -> None:
    teams = set(merged.get("teams") or {})
    for route, with_ in include.share.items():
        where = _at(("include", "share", route), lines)
        if f"routes.{route}" not in owners:
            problems.add(file, f"{where}: unknown route {route!r}; routes: {', '.join(sorted(merged['routes']))}")
        for t in with_ if isinstance(with_, list) else ():
            if t not in teams:
                problems.add(file, f"{where}: unknown team {t!r}; teams: {', '.join(sorted(teams))}")


def _isolate(merged: dict, include: Include, owners: dict[str, Owner], own_routes: dict[str, set[str]]) -> None:
    """Write each team's usable routes: its own, the platform's, and those shared with it."""
    platform_routes = {n for n in merged.get("routes") or {} if owners[f"routes.{n}"].team is None}
    for team, spec in (merged.get("teams") or {}).items():
        shared = {r for r in include.share if _shared(include, r, team)}
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
    parts = tuple(path.split(".")) if isinstance(path, str) else path
    line = lines.get(parts)
    dotted = ".".join(str(p) for p in parts)
    return f"{dotted} (line {line})" if line else dotted
