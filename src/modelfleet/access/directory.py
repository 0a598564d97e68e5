"""Teams and their keys, held in memory so that checking a key costs a hash and a dict lookup.

The fleet file's teams and keys are loaded once; teams and keys made through the admin API or the
CLI live in the store and are re-read every `state.refresh_interval`. A key that is not in memory
is looked up in the store once (and a wrong one is remembered as wrong for a while), so a new key
works at once on every gateway. When the store cannot be reached, the keys already known keep
working: the store is the source of truth, not a dependency of every request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelfleet.access import keys
from modelfleet.background import Periodic, Reported
from modelfleet.config.schema import Limits, Team
from modelfleet.errors import Unauthorized, Unavailable
from modelfleet.state.store import Store

log = logging.getLogger("modelfleet.access")

_MISS_TTL = 5.0
_MISS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """A team as the hot path needs it."""

    team: str
    routes: frozenset[str] | None  # None = every route
    limits: Limits
    timeout: float | None
    tags: dict[str, str] = field(default_factory=dict)
    source: str = "fleet"
    limited: bool = False  # any limit set: decided once here, read on every request

    def may_use(self, route: str) -> bool:
        return self.routes is None or route in self.routes

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.team, "source": self.source,
            "routes": "*" if self.routes is None else sorted(self.routes),
            "limits": self.limits.model_dump(exclude_none=True), "timeout": self.timeout, "tags": self.tags,
        }  # fmt: skip


_NO_LIMITS = Limits()


def caller_from(name: str, team: Team, source: str, everything: frozenset[str] | None = None) -> Caller:
    """`everything`: what `routes: "*"` means; None = every route. In a multi-tenant fleet it is the
    platform's routes only, so a team made later (API, CLI) never reaches another team's."""
    routes = everything if team.routes == "*" else frozenset(team.routes)
    return Caller(name, routes, team.limits, team.timeout, dict(team.tags), source, team.limits != _NO_LIMITS)


def team_spec(team: Team) -> dict[str, Any]:
    """What the store keeps of a team: everything but its keys."""
    return team.model_dump(mode="json", exclude={"keys"}, exclude_none=True)


def merge_teams(
    fleet_teams: dict[str, Team], stored: dict[str, tuple[dict[str, Any], str]]
) -> dict[str, tuple[dict[str, Any], str]]:
    """The one list of teams, for the gateway and the CLI alike: name -> (spec, source).

    The fleet file's teams are the file's: its version wins, and a team removed from the file is gone
    even though its row (source "fleet") is still in the store, so its keys stop working. Teams made
    through the admin API or the CLI (source "api") live in the store.
    """
    teams = {n: (spec, src) for n, (spec, src) in stored.items() if src != "fleet" and n not in fleet_teams}
    teams.update({n: (team_spec(t), "fleet") for n, t in fleet_teams.items()})
    return dict(sorted(teams.items()))


class Directory:
    def __init__(
        self,
        fleet_teams: dict[str, Team],
        store: Store,
        refresh_interval: float,
        everything: frozenset[str] | None = None,
    ) -> None:
        self.everything = everything
        self.store = store
        self.refresh_interval = refresh_interval
        self._fleet_teams = fleet_teams
        self.teams: dict[str, Caller] = {n: caller_from(n, t, "fleet") for n, t in fleet_teams.items()}
        # digest -> (key id, team); fleet-file keys have the id "fleet"
        self._fleet_keys = {
            keys.digest(k.get_secret_value()): ("fleet", n) for n, t in fleet_teams.items() for k in t.keys
        }
        self._keys: dict[str, tuple[str, str]] = dict(self._fleet_keys)
        self._misses: dict[str, float] = {}
        self.store_ok = True
        self._loop = Periodic("team directory refresh", refresh_interval, self.refresh, logger=log)

    @property
    def enforcing(self) -> bool:
        """Open mode (no auth) lasts exactly as long as no team exists."""
        return bool(self.teams)

    async def start(self) -> None:
        # Teams from the fleet file are written to the store, so the CLI and other gateways see them; a team
        # the file no longer has is ended there, its keys revoked, so adding it back later starts afresh.
        with contextlib.suppress(Exception):  # refresh() says what is wrong, and the loop retries
            await self.store.init()
            for name, team in self._fleet_teams.items():
                await self.store.put_team(name, team_spec(team), "fleet")
            for name, (_, source) in (await self.store.teams()).items():
                if source == "fleet" and name not in self._fleet_teams:
                    log.info("team %r is no longer in the fleet file: ended, and its keys revoked", name)
                    await self.store.delete_team(name)
        with contextlib.suppress(Exception):
            await self.refresh()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def refresh(self) -> None:
        try:
            await self.store.init()
            stored = await self.store.teams()
            live = await self.store.live_keys()
        except Exception as exc:
            if self.store_ok:
                log.error("store unreachable (%s); keys already known keep working", exc)
            self.store_ok = False
            raise Reported(f"{type(exc).__name__}: {exc}") from exc
        if not self.store_ok:
            log.info("store reachable again")
        self.store_ok = True
        teams = {n: caller_from(n, t, "fleet") for n, t in self._fleet_teams.items()}
        for name, (spec, source) in merge_teams(self._fleet_teams, stored).items():
            if name in teams:
                continue
            try:
                teams[name] = caller_from(name, Team.model_validate(spec), source, self.everything)
            except ValidationError as exc:
                log.error("team %r in the store is not valid and is skipped: %s", name, exc)
        self.teams = teams
        self._keys = {**{h: (i, t) for i, t, h in live if t in teams}, **self._fleet_keys}
        self._misses.clear()

    def add(self, name: str, caller: Caller) -> None:
        self.teams = {**self.teams, name: caller}

    def remember(self, key_hash: str, key_id: str, team: str) -> None:
        self._keys[key_hash] = (key_id, team)
        self._misses.pop(key_hash, None)

    def forget_key(self, key_id: str) -> None:
        self._keys = {h: v for h, v in self._keys.items() if v[0] != key_id}

    def forget_team(self, name: str) -> None:
        self.teams = {n: c for n, c in self.teams.items() if n != name}
        self._keys = {h: v for h, v in self._keys.items() if v[1] != name}

    async def authenticate(self, header: str | None) -> Caller:
        key = keys.bearer(header)
        if key is None:
            raise Unauthorized(
                "missing API key: send it as 'Authorization: Bearer <key>' (modelfleet keys create --team NAME)"
            )
        h = keys.digest(key)
        found = self._keys.get(h)
        if found is None:
            found = await self._lookup(h)
        team = self.teams.get(found[1])
        if team is None:
            raise Unauthorized(f"the API key {keys.shown(found[0])} belongs to no team any more")
        return team

    async def _lookup(self, h: str) -> tuple[str, str]:
        now = time.monotonic()
        if self._misses.get(h, 0.0) > now:
            raise _unknown()
        try:
            found = await self.store.key_by_hash(h)
            if found is not None and found[1] not in self.teams:
                await self.refresh()  # a key of a team made a moment ago (CLI, another gateway): learn the team now
        except Exception:
            raise Unavailable("cannot verify this API key now: the key store is unreachable; retry shortly",
                              retry_after=2) from None  # fmt: skip
        if found is None or found[1] not in self.teams:
            if len(self._misses) >= _MISS_MAX:
                self._misses.clear()
            self._misses[h] = now + _MISS_TTL
            raise _unknown()
        self._keys[h] = found
        return found


def _unknown() -> Unauthorized:
    return Unauthorized("invalid API key: it is unknown or was revoked")
