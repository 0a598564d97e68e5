"""Team and key administration, shared by the admin API and the CLI: both act on the store.

Teams defined in the fleet file belong to the file: they can be given keys here, but are changed
by editing the file. Teams made here live in the store.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

from pydantic import ValidationError

from modelfleet.access import keys
from modelfleet.access.directory import merge_teams
from modelfleet.config.schema import NAME_PATTERN, Team
from modelfleet.errors import Forbidden, InvalidRequest, ModelNotFound
from modelfleet.state.store import USAGE_COLUMNS, Store

_SINCE = re.compile(r"^([0-9]{1,9})([dhw])$")  # bounded: a span past 1970 means everything anyway


class NotFound(ModelNotFound):
    code = "not_found"


def since_day(since: str, now: float | None = None) -> str:
    """`7d`, `24h`, `2w` or a date `2026-11-01` -> the first UTC day to include."""
    now = time.time() if now is None else now
    if m := _SINCE.match(since.strip()):
        seconds = int(m.group(1)) * {"h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
        # "7d" means today and the six days before it; a span before 1970 means everything.
        return time.strftime("%Y-%m-%d", time.gmtime(max(0.0, now - max(0, seconds - 86400))))
    if re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", since.strip()):
        try:
            return datetime.date.fromisoformat(since.strip()).isoformat()
        except ValueError:
            pass  # 2026-13-45: the shape of a date, not a date
    raise InvalidRequest(f"since: expected a span such as 7d, 24h, 2w or a date such as 2026-11-01, got {since!r}",
                         param="since")  # fmt: skip


def usage_columns(by: str | None) -> tuple[str, ...]:
    if not by:
        return USAGE_COLUMNS
    cols = tuple(c.strip() for c in by.split(",") if c.strip())
    unknown = [c for c in cols if c not in USAGE_COLUMNS]
    if unknown:
        raise InvalidRequest(f"by: unknown column {unknown[0]!r}; expected some of {', '.join(USAGE_COLUMNS)}",
                             param="by")  # fmt: skip
    return cols


class TeamAdmin:
    def __init__(
        self, store: Store, routes: list[str], fleet_teams: dict[str, Team], limits_unsupported: str | None = None
    ) -> None:
        self.store = store
        self.routes = routes
        self.fleet_teams = fleet_teams
        self.limits_unsupported = limits_unsupported  # a layout that cannot keep limits exact says why

    async def teams(self) -> dict[str, tuple[dict[str, Any], str]]:
        await self.store.init()
        return merge_teams(self.fleet_teams, await self.store.teams())

    async def put_team(self, name: str, spec: dict[str, Any]) -> Team:
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise InvalidRequest(f"name: expected letters, digits and ._:/- (up to 128), got {name!r}", param="name")
        if name in self.fleet_teams:
            raise Forbidden(f"team {name!r} is defined in the fleet file; change it there", code="defined_in_fleet")
        if spec.get("keys"):
            raise InvalidRequest("keys: create keys with POST /admin/teams/{team}/keys; they are shown once",
                                 param="keys")  # fmt: skip
        try:
            team = Team.model_validate(spec)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidRequest(f"{where}: {err['msg']}", param=where or None) from None
        if self.limits_unsupported and team.limits.model_dump(exclude_none=True):
            raise InvalidRequest(f"limits: {self.limits_unsupported}", param="limits")
        for r in team.routes if isinstance(team.routes, list) else ():
            if r not in self.routes:
                raise InvalidRequest(f"routes: unknown route {r!r}; routes: {', '.join(self.routes)}", param="routes")
        await self.store.init()
        await self.store.put_team(name, team.model_dump(mode="json", exclude={"keys"}, exclude_none=True), "api")
        return team

    async def delete_team(self, name: str) -> None:
        if name in self.fleet_teams:
            raise Forbidden(f"team {name!r} is defined in the fleet file; remove it there", code="defined_in_fleet")
        await self._known(name)
        await self.store.delete_team(name)

    async def _known(self, team: str) -> None:
        if team not in await self.teams():
            raise NotFound(f"no team {team!r}")

    async def create_key(self, team: str) -> dict[str, str]:
        await self._known(team)
        key_id, key = keys.new_key()
        await self.store.add_key(key_id, team, keys.digest(key))
        return {"id": key_id, "team": team, "key": key}

    async def revoke_key(self, key_id: str) -> str:
        await self.store.init()
        team = await self.store.revoke_key(key_id)
        if team is None:
            raise NotFound(f"no live key with id {key_id!r}")
        return team

    async def keys_of(self, team: str) -> list[dict[str, Any]]:
        await self._known(team)
        return [{**k, "key": keys.shown(k["id"])} for k in await self.store.keys_of(team)]

    async def usage(self, *, since: str, team: str | None, by: str | None) -> list[dict]:
        await self.store.init()
        return await self.store.usage(since_day=since_day(since), team=team, by=usage_columns(by))
