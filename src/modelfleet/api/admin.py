"""The admin API (`/admin/...`, its own key) and a team's view of its own usage (`/v1/usage`).

GET    /admin/teams                      teams, from the fleet file and the store
POST   /admin/teams                      {"name", "routes", "limits", "timeout", "tags"}: create or replace
DELETE /admin/teams/{team}               and revoke its keys
GET    /admin/teams/{team}/keys          ids only; a key is shown once, when it is made
POST   /admin/teams/{team}/keys          -> {"id", "team", "key"}
DELETE /admin/keys/{id}
GET    /admin/usage?team=&since=7d&by=day,route
GET    /admin/cost?since=30d             chargeback: each deployment's cost split by the tokens each team used
GET    /v1/usage?since=7d&by=day,route   with a team's key: that team's usage, and no other's
GET    /admin/limits                     every team's standing against its limits, as the limiter counts it now
GET    /v1/limits                        with a team's key: that team's standing, and no other's
GET    /v1/whoami                        what the key is: admin, a team (its routes and limits), none yet, or open mode
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from pydantic import SecretStr

from modelfleet.access import keys
from modelfleet.access.admin import NotFound, TeamAdmin
from modelfleet.access.directory import caller_from
from modelfleet.access.gate import Gate
from modelfleet.access.standing import standing
from modelfleet.api.admin_schema import validate_team
from modelfleet.control.deployments import Deployments
from modelfleet.control.platforms.base import NotManaged
from modelfleet.errors import APIError, Forbidden, InvalidRequest, Unauthorized, UpstreamError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


async def _body(request: web.Request) -> dict:
    try:
        doc = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return doc


class AdminAPI:
    def __init__(self, admin: TeamAdmin, gate: Gate, admin_key: SecretStr | None, deployments: Deployments) -> None:
        self.deployments = deployments
        self.admin = admin
        self.gate = gate
        self.directory = gate.directory
        self.admin_key = admin_key

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.admin_key is None:
                raise Forbidden("the admin API is off: set auth.admin_key in the fleet file", code="admin_disabled")
            key = keys.bearer(request.headers.get("Authorization"))
            if key is None or not keys.same(key, self.admin_key.get_secret_value()):
                raise Unauthorized(
                    "the admin API needs the admin key (auth.admin_key) as 'Authorization: Bearer <key>'"
                )
            return await handler(request)

        return guarded

    def routes(self) -> list[tuple[str, str, Handler]]:
        g = self._guard
        return [
            ("GET", "/admin/teams", g(self.list_teams)),
            ("POST", "/admin/teams", g(self.put_team)),
            ("DELETE", "/admin/teams/{team}", g(self.delete_team)),
            ("GET", "/admin/teams/{team}/keys", g(self.list_keys)),
            ("POST", "/admin/teams/{team}/keys", g(self.create_key)),
            ("DELETE", "/admin/keys/{key_id}", g(self.revoke_key)),
            ("GET", "/admin/usage", g(self.all_usage)),
            ("GET", "/admin/cost", g(self.chargeback)),
            ("GET", "/admin/deployments", g(self.deployment_status)),
            ("POST", "/admin/deployments/{name}/{verb:start|stop}", g(self.deployment_verb)),
            ("GET", "/admin/limits", g(self.all_limits)),
            ("GET", "/v1/usage", self.team_usage),
            ("GET", "/v1/limits", self.team_limits),
            ("GET", "/v1/whoami", self.whoami),
        ]

    async def list_teams(self, _: web.Request) -> web.Response:
        stored = await self.admin.teams()
        teams = {n: c.describe() for n, c in self.directory.teams.items()}
        for name, (spec, source) in stored.items():
            teams.setdefault(name, {"name": name, "source": source, **spec})
        return _json({"object": "list", "data": [teams[n] for n in sorted(teams)]})

    async def put_team(self, request: web.Request) -> web.Response:
        doc = await _body(request)
        validate_team(doc)
        name = doc.pop("name")
        team = await self.admin.put_team(name, doc)
        caller = caller_from(name, team, "api", self.directory.everything)
        self.directory.add(name, caller)
        return _json(caller.describe(), 201)

    async def delete_team(self, request: web.Request) -> web.Response:
        name = request.match_info["team"]
        await self.admin.delete_team(name)
        self.directory.forget_team(name)
        return _json({"deleted": name})

    async def list_keys(self, request: web.Request) -> web.Response:
        return _json({"object": "list", "data": await self.admin.keys_of(request.match_info["team"])})

    async def create_key(self, request: web.Request) -> web.Response:
        made = await self.admin.create_key(request.match_info["team"])
        self.directory.remember(keys.digest(made["key"]), made["id"], made["team"])
        return _json(made, 201)

    async def revoke_key(self, request: web.Request) -> web.Response:
        key_id = request.match_info["key_id"]
        team = await self.admin.revoke_key(key_id)
        self.directory.forget_key(key_id)
        return _json({"revoked": key_id, "team": team})

    async def deployment_status(self, _: web.Request) -> web.Response:
        return _json({"object": "list", "data": await self.deployments.status()})

    async def deployment_verb(self, request: web.Request) -> web.Response:
        name, verb = request.match_info["name"], request.match_info["verb"]
        if name not in self.deployments.platforms:
            raise NotFound(f"no deployment {name!r}; deployments: {', '.join(self.deployments.platforms)}")
        try:
            want = await self.deployments.set(name, verb, f"{verb} by the admin API")
        except NotManaged as exc:
            raise InvalidRequest(str(exc), code="not_managed") from None
        except APIError:
            raise
        except Exception as exc:  # the platform refused (AccessDenied, a quota, an API server away): say so
            raise UpstreamError(f"deployment {name!r}: {verb} failed: {type(exc).__name__}: {exc}",
                                code=f"{verb}_failed") from None  # fmt: skip
        return _json({"name": name, **want})

    async def _flushed(self) -> None:
        with contextlib.suppress(Exception):  # what is still in memory shows up now, not after the next flush
            await self.gate.ledger.flush()

    async def all_usage(self, request: web.Request) -> web.Response:
        await self._flushed()
        q = request.query
        rows = await self.admin.usage(since=q.get("since", "7d"), team=q.get("team"), by=q.get("by"))
        return _json({"object": "list", "data": rows})

    async def chargeback(self, request: web.Request) -> web.Response:
        from modelfleet.cost import chargeback, load_prices
        from modelfleet.cost.chargeback import window

        await self._flushed()
        since = request.query.get("since", "30d")
        start, end = window(since)
        rows = await self.admin.usage(since=since, team=None, by="day,team,deployment")
        # Pricing up to 400 days of schedules is CPU work: off the event loop, so requests keep flowing.
        fleet = self.deployments.fleet
        result = await asyncio.to_thread(lambda: chargeback(fleet, rows, start, end, load_prices()))
        return _json(result)

    async def team_usage(self, request: web.Request) -> web.Response:
        caller = await self.gate.authenticate(request.headers.get("Authorization"))
        q = request.query
        team = q.get("team")
        if caller is not None:
            if team is not None and team != caller.team:
                raise Forbidden(f"this key belongs to team {caller.team!r}; it cannot read team {team!r}'s usage",
                                param="team")  # fmt: skip
            team = caller.team
        await self._flushed()
        rows = await self.admin.usage(since=q.get("since", "7d"), team=team, by=q.get("by"))
        return _json({"object": "list", "data": rows})

    async def all_limits(self, _: web.Request) -> web.Response:
        teams = [c for _, c in sorted(self.directory.teams.items()) if c.limited]
        return _json({"object": "list", "data": [await standing(self.gate.counters, c) for c in teams]})

    async def team_limits(self, request: web.Request) -> web.Response:
        caller = await self.gate.authenticate(request.headers.get("Authorization"))
        mine = [await standing(self.gate.counters, caller)] if caller is not None else []  # open mode: no limits
        return _json({"object": "list", "data": mine})

    def _splits(self, may_use: Callable[[str], bool] | None) -> dict[str, dict[str, int]]:
        """The configured weights of each route that splits its traffic, for the A/B page."""
        routes = self.deployments.fleet.routes
        return {
            name: {d: w for d, w in r.deployments.items() if w > 0}
            for name, r in routes.items()
            if sum(1 for w in r.deployments.values() if w > 0) > 1 and (may_use is None or may_use(name))
        }

    async def whoami(self, request: web.Request) -> web.Response:
        """For the console: which views a key opens, without probing endpoints that would refuse it."""
        header = request.headers.get("Authorization")
        key = keys.bearer(header)
        admin_on = self.admin_key is not None
        if key is not None and admin_on and keys.same(key, self.admin_key.get_secret_value()):  # type: ignore[union-attr]
            # The admin key is no team key: with teams it cannot chat, so the page is told the routes here.
            return _json({"role": "admin", "team": None, "admin_api": True, "teams": self.directory.enforcing,
                          "routes": self.admin.routes, "splits": self._splits(None)})  # fmt: skip
        if key is None and self.directory.enforcing:  # not an error: the page asks for a key
            return _json({"role": "none", "team": None, "admin_api": admin_on})
        caller = await self.gate.authenticate(header)
        if caller is None:
            if key is not None:
                # Open mode lets any key through to the OpenAI routes (clients send placeholders), but the console
                # asks what a key is: one that is not the admin key is no key here, and saying "open" would hide it.
                raise Unauthorized("invalid API key: this gateway has no teams (open mode), so it needs no key, "
                                   "and this is not the admin key (auth.admin_key)")  # fmt: skip
            return _json({"role": "open", "team": None, "admin_api": admin_on, "splits": self._splits(None)})
        return _json({"role": "team", "admin_api": admin_on, **caller.describe(), "team": caller.team,
                      "splits": self._splits(caller.may_use)})  # fmt: skip
