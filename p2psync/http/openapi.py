"""The OpenAPI 3.1 description of the HTTP API, generated from the routes (so from the ops).

Request schemas are the ops' msgspec ``Params`` structs as JSON Schema
(:func:`msgspec.json.schema_components`), so the description cannot drift from what the server
validates; results are the shapes declared in :mod:`p2psync.http.results` (the ops return
plain data; ``tests/test_http.py`` validates real answers against them). Served at
``GET /api/v1/openapi.json`` without a key (it holds nothing private); ``tests/test_http.py``
checks it against the real endpoints.
"""

from __future__ import annotations

from typing import Any

import msgspec

from p2psync.http.auth import KEY_HEADER
from p2psync.http.results import result_schema
from p2psync.http.routes import EVENTS_PATH, OPENAPI_PATH, Route, routes

_REF = "#/components/schemas/{name}"


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": _REF.format(name="Error")}}}}


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def describe(version: str, table: list[Route] | None = None) -> dict[str, Any]:
    """The OpenAPI document of ``table`` (default: the routes of the current ops)."""
    table = routes() if table is None else table
    from p2psync.api import SubscribeParams

    structs = sorted({r.params for r in table} | {SubscribeParams}, key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    components["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["type", "message"], "properties": {
            "type": {"type": "string", "description": "the error class, e.g. InvalidParams"},
            "message": {"type": "string"}}}}}
    errors = {"default": _error_response("a typed error (docs/http.md lists the statuses)")}
    paths: dict[str, Any] = {}
    for r in table:
        schema_ref = {"$ref": _REF.format(name=r.params.__name__)}
        ok = {"200": {"description": "the op's result (docs/local-api.md)",
                      "content": {"application/json": {"schema": result_schema(r.op)}}},
              **errors}
        item: dict[str, Any] = {}
        if "POST" in r.methods:
            item["post"] = {"operationId": r.op, "summary": f"local API op {r.op}",
                            "requestBody": {"required": False, "content": {
                                "application/json": {"schema": schema_ref}}},
                            "responses": ok}
        if "GET" in r.methods:
            item["get"] = {"operationId": f"{r.op}.get", "summary": f"local API op {r.op}",
                           "parameters": _query_parameters(components[r.params.__name__]),
                           "responses": ok}
        paths[r.path] = item
    paths[EVENTS_PATH] = {"get": {
        "operationId": "events", "summary": "change stream (Server-Sent Events)",
        "parameters": _query_parameters(components["SubscribeParams"]),
        "responses": {"200": {"description": "events `ready`, then `change` per changed "
                              "document, `closed` when the agent stops",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      **errors}}}
    paths[OPENAPI_PATH] = {"get": {"operationId": "openapi", "security": [],
                                   "summary": "this description",
                                   "responses": {"200": {"description": "OpenAPI 3.1",
                                                         "content": {"application/json": {
                                                             "schema": {}}}}}}}
    paths["/metrics"] = {"get": {"operationId": "metrics", "summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text format 0.0.4",
                                                       "content": {"text/plain": {
                                                           "schema": {"type": "string"}}}},
                                               **errors}}}
    paths["/"] = {"get": {"operationId": "page", "security": [],
                          "summary": "the status page (its data comes from the API, with the key)",
                          "responses": {"200": {"description": "HTML", "content": {
                              "text/html": {"schema": {"type": "string"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "p2psync local HTTP API", "version": version,
                 "description": "The local API of a p2psync agent over HTTP (docs/http.md)."},
        "security": [{"apiKey": []}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": components, "securitySchemes": {"apiKey": {
            "type": "apiKey", "in": "header", "name": KEY_HEADER}}},
    }
