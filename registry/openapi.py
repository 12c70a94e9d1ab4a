"""The OpenAPI 3.1 document of the registry, admin and token APIs, built from the pydantic models'
JSON schemas and one table of operations. A test checks the table against the mounted routes."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from registry._api_admin import ADMIN_BASE, TOKENS_BASE
from registry._api_registry import BASE
from registry.documents import (
    ApplicationDocument,
    CreatedToken,
    DeviceDocument,
    Members,
    TokenInfo,
    TokenRequest,
)

_MODELS: list[type[BaseModel]] = [ApplicationDocument, DeviceDocument, Members, TokenRequest, TokenInfo,
                                  CreatedToken]
_APP = {"name": "app", "in": "path", "required": True, "schema": {"type": "string"}}
_DEVICE = {"name": "device", "in": "path", "required": True, "schema": {"type": "string"}}
_LABELS = {"name": "labels", "in": "query", "required": False, "schema": {"type": "string"},
           "description": "Kubernetes label selector, e.g. `env=prod,tier in (a,b),!legacy`"}
_VERSION = {"name": "resourceVersion", "in": "query", "required": False, "schema": {"type": "string"},
            "description": "Delete only if this is the current resourceVersion (else 409)"}
_TOKEN_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

#: (method, path, summary, parameters, request model, success status, response model, list?)
OPERATIONS: list[tuple[str, str, str, list[dict[str, Any]], str | None, int, str | None, bool]] = [
    ("get", f"{BASE}/apps", "List visible applications", [_LABELS], None, 200, "ApplicationDocument", True),
    ("post", f"{BASE}/apps", "Create an application", [], "ApplicationDocument", 201, "ApplicationDocument",
     False),
    ("get", f"{BASE}/apps/{{app}}", "Read an application", [_APP], None, 200, "ApplicationDocument", False),
    ("put", f"{BASE}/apps/{{app}}", "Update an application", [_APP], "ApplicationDocument", 204, None, False),
    ("delete", f"{BASE}/apps/{{app}}", "Delete an application, its devices and its topic", [_APP, _VERSION],
     None, 204, None, False),
    ("get", f"{BASE}/apps/{{app}}/devices", "List devices", [_APP, _LABELS], None, 200, "DeviceDocument", True),
    ("post", f"{BASE}/apps/{{app}}/devices", "Create a device", [_APP], "DeviceDocument", 201,
     "DeviceDocument", False),
    ("get", f"{BASE}/apps/{{app}}/devices/{{device}}", "Read a device (credentials redacted)",
     [_APP, _DEVICE], None, 200, "DeviceDocument", False),
    ("put", f"{BASE}/apps/{{app}}/devices/{{device}}", "Update a device", [_APP, _DEVICE], "DeviceDocument",
     204, None, False),
    ("delete", f"{BASE}/apps/{{app}}/devices/{{device}}", "Delete a device", [_APP, _DEVICE, _VERSION],
     None, 204, None, False),
    ("get", f"{ADMIN_BASE}/apps/{{app}}/members", "Read the members", [_APP], None, 200, "Members", False),
    ("put", f"{ADMIN_BASE}/apps/{{app}}/members", "Replace the members", [_APP], "Members", 204, None, False),
    ("get", TOKENS_BASE, "List the caller's access tokens", [], None, 200, "TokenInfo", True),
    ("post", TOKENS_BASE, "Create an access token (shown once)", [], "TokenRequest", 201, "CreatedToken",
     False),
    ("delete", f"{TOKENS_BASE}/{{id}}", "Delete an access token", [_TOKEN_ID], None, 204, None, False),
]

_PROBLEM = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object"}}},
    "required": ["type", "title", "status"],
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in _MODELS],
                                 ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Problem"] = _PROBLEM
    problem = {"description": "Problem (RFC 9457)",
               "content": {"application/problem+json": {"schema": _ref("Problem")}}}
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, params, request, status, response, many in OPERATIONS:
        op: dict[str, Any] = {"summary": summary, "parameters": params,
                              "security": [{"bearer": []}]}
        if request:
            op["requestBody"] = {"required": request != "TokenRequest",
                                 "content": {"application/json": {"schema": _ref(request)}}}
        ok: dict[str, Any] = {"description": summary}
        if response:
            schema = {"type": "array", "items": _ref(response)} if many else _ref(response)
            ok["content"] = {"application/json": {"schema": schema}}
        responses = {str(status): ok}
        for code in ("400", "401", "403", "404", "409", "422") if method != "get" else ("401", "403", "404"):
            responses[code] = problem
        op["responses"] = responses
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hawser registry API", "version": "v1alpha1"},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
