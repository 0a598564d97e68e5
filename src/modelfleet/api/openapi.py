"""The OpenAPI 3.1 document of the whole API, served at /openapi.json.

Request bodies come from the very schemas that validate requests (api/schema.py), so the document
cannot drift from what the gateway accepts; every error answers in the one OpenAI error shape.
Built once at start-up.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from modelfleet import __version__
from modelfleet.api import admin_schema, schema

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ANY_OBJECT = {"type": "object"}


def document() -> dict[str, Any]:
    components: dict[str, Any] = {"Error": _ERROR}
    bodies: dict[str, TypeAdapter[Any]] = {
        "ChatRequest": schema.CHAT,
        "CompletionRequest": schema.COMPLETION,
        "EmbeddingRequest": schema.EMBEDDING,
        "TeamRequest": admin_schema.TEAM,
    }
    for name, adapter in bodies.items():
        components.update(_schema(name, adapter))

    def op(summary: str, *, body: str | None = None, params: list[dict] | None = None, auth: str = "key",
           ok: dict[str, Any] | None = None, stream: bool = False, status: str = "200") -> dict[str, Any]:  # fmt: skip
        content = {"application/json": {"schema": ok or _ANY_OBJECT}}
        if stream:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        out: dict[str, Any] = {
            "summary": summary,
            "responses": {
                status: {"description": "Created" if status == "201" else "OK", "content": content},
                "4XX": {"description": "The request's fault, in the OpenAI error shape", "content": _error_content()},
                "5XX": {"description": "A deployment's or the gateway's fault", "content": _error_content()},
            },
        }
        if auth != "none":
            out["security"] = [{auth: []}, {}] if auth == "key" else [{auth: []}]
        if body:
            out["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}  # fmt: skip
        if params:
            out["parameters"] = params
        return out

    def query(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": description,
        }

    def path(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    usage = [query("since", "7d, 24h, 2w or a date such as 2026-11-01"), query("by", "columns: day,team,route,...")]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelfleet",
            "version": __version__,
            "description": "An OpenAI-compatible gateway and its admin API, driven by one fleet file.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "key": {"type": "http", "scheme": "bearer", "description": "a team's API key (none in open mode)"},
                "admin": {"type": "http", "scheme": "bearer", "description": "auth.admin_key"},
            },
        },
        "paths": {
            "/v1/chat/completions": {"post": op("Chat", body="ChatRequest", stream=True)},
            "/v1/completions": {"post": op("Completion", body="CompletionRequest", stream=True)},
            "/v1/embeddings": {"post": op("Embeddings", body="EmbeddingRequest")},
            "/v1/models": {"get": op("The routes the caller may use")},
            "/v1/usage": {"get": op("The caller's team's usage", params=[*usage, query("team", "own team only")])},
            "/v1/limits": {"get": op("The caller's team's standing against its limits, as the limiter counts it")},
            "/v1/whoami": {"get": op("What the key is: admin, a team, or open mode")},
            "/healthz": {"get": op("The process is up", auth="none")},
            "/health": {"get": op("The process is up (vLLM's and TGI's name)", auth="none")},
            "/readyz": {"get": op("Some route can answer; which cannot, and why", auth="none")},
            "/metrics": {
                "get": {
                    **op("Prometheus metrics", auth="none"),
                    "responses": {
                        "200": {
                            "description": "text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/admin/teams": {
                "get": op("Every team", auth="admin"),
                "post": op("Create or replace a team", auth="admin", body="TeamRequest", status="201"),
            },
            "/admin/teams/{team}": {
                "delete": {**op("Delete a team made here", auth="admin"), "parameters": [path("team")]}
            },
            "/admin/teams/{team}/keys": {
                "get": {**op("A team's keys (ids only)", auth="admin"), "parameters": [path("team")]},
                "post": {**op("A new key, shown once", auth="admin", status="201"), "parameters": [path("team")]},
            },
            "/admin/keys/{key_id}": {"delete": {**op("Revoke a key", auth="admin"), "parameters": [path("key_id")]}},
            "/admin/usage": {
                "get": op("Usage of every team", auth="admin", params=[*usage, query("team", "one team")])
            },
            "/admin/limits": {"get": op("Every limited team's standing against its limits", auth="admin")},
            "/admin/cost": {"get": op("Chargeback", auth="admin", params=[query("since", "30d, 2w or a date")])},
            "/admin/deployments": {"get": op("Deployments: desired, observed, schedule, wakes", auth="admin")},
            "/admin/deployments/{name}/{verb}": {
                "post": {
                    **op("Start or stop a deployment", auth="admin"),
                    "parameters": [path("name"), {**path("verb"), "schema": {"enum": ["start", "stop"]}}],
                }
            },
        },
    }


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _schema(name: str, adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The adapter's JSON schema as components: its own, and the ones it refers to."""
    doc = adapter.json_schema(ref_template="#/components/schemas/{model}")
    defs = doc.pop("$defs", {})
    return {name: doc, **defs}
