"""The registry's HTTP routes, to mount on the API port: `/api/registry/v1alpha1` (apps, devices,
the OpenAPI document), `/api/admin/v1alpha1` (members) and `/api/tokens/v1alpha1` (access tokens).

Users authenticate with a bearer token through the `UserAuthenticator` the composition root passes
in (access tokens now, OIDC later); every error is an RFC 9457 problem.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hawser.access import UserAuthenticator
from registry._api_admin import ADMIN_BASE, TOKENS_BASE, AdminEndpoints
from registry._api_registry import BASE, RegistryEndpoints
from registry.openapi import openapi_document
from registry.store import RegistryStore


async def _openapi(_request: Request) -> Response:
    return JSONResponse(openapi_document())


def routes(store: RegistryStore, authenticator: UserAuthenticator) -> list[BaseRoute]:
    return [
        Route(f"{BASE}/openapi.json", _openapi, methods=["GET"]),
        *RegistryEndpoints(store, authenticator).routes(),
        *AdminEndpoints(store, authenticator).routes(),
    ]


__all__ = ["ADMIN_BASE", "BASE", "TOKENS_BASE", "routes"]
