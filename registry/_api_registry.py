"""`/api/registry/v1alpha1`: applications and their devices (list, create, read, update, delete).

Lists are plain JSON arrays (as Drogue's), filtered by `?labels=` and then paged by `?offset=` and
`?limit=` (at most 1000; without it, the whole list); create answers 201 with `Location` and the document;
update and delete answer 204. Reading needs the role reader, changing devices or an application
manager, deleting an application admin (see `registry._http` for the 404-not-403 rule).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hawser.access import Role, UserAuthenticator
from hawser.errors import BadRequest, Forbidden
from registry._http import (
    app_param,
    device_param,
    guarded,
    json_body,
    json_response,
    page_of,
    parse,
    precondition,
    principal_of,
    require,
)
from registry._http import selector_of as _selector
from registry.documents import ApplicationDocument, DeviceDocument
from registry.store import RegistryStore

BASE = "/api/registry/v1alpha1"


def _same(kind: str, path_value: str, body_value: str | None) -> None:
    if body_value is not None and body_value != path_value:
        raise BadRequest(f"the document's {kind} {body_value[:80]!r} differs from the path's {path_value[:80]!r}")


class RegistryEndpoints:
    def __init__(self, store: RegistryStore, authenticator: UserAuthenticator) -> None:
        self.store = store
        self.auth = authenticator

    # --- applications ----------------------------------------------------------------------------

    async def list_apps(self, request: Request) -> Response:
        principal = await principal_of(request, self.auth)
        selector, window = _selector(request), page_of(request)
        apps = await self.store.list_applications(principal=principal, selector=selector)
        return json_response([a.dump() for a in apps[window]])

    async def create_app(self, request: Request) -> Response:
        principal = await principal_of(request, self.auth)
        document = parse(ApplicationDocument, await json_body(request))
        if not principal.may_touch(document.metadata.name):
            raise Forbidden("this token is not scoped to an application of that name")
        created = await self.store.create_application(document, creator=principal.user)
        location = f"{BASE}/apps/{quote(created.metadata.name, safe='')}"
        return json_response(created.dump(), 201, {"Location": location})

    async def get_app(self, request: Request) -> Response:
        app = app_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.READER)
        return json_response((await self.store.get_application(app)).dump())

    async def update_app(self, request: Request) -> Response:
        app = app_param(request)
        principal = await principal_of(request, self.auth)
        await require(self.store, principal, app, Role.MANAGER)
        document = parse(ApplicationDocument, await json_body(request))
        _same("name", app, document.metadata.name)
        await self.store.update_application(document)
        return Response(status_code=204)

    async def delete_app(self, request: Request) -> Response:
        app = app_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.ADMIN)
        version = precondition(await json_body(request, optional=True), request)
        await self.store.delete_application(app, resource_version=version)
        return Response(status_code=204)

    # --- devices ---------------------------------------------------------------------------------

    async def list_devices(self, request: Request) -> Response:
        app = app_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.READER)
        selector, window = _selector(request), page_of(request)
        devices = await self.store.list_devices(app, selector=selector)
        return json_response([d.dump() for d in devices[window]])

    async def create_device(self, request: Request) -> Response:
        app = app_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.MANAGER)
        document = parse(DeviceDocument, await json_body(request))
        _same("application", app, document.metadata.application)
        created = await self.store.create_device(app, document)
        location = f"{BASE}/apps/{quote(app, safe='')}/devices/{quote(created.metadata.name, safe='')}"
        return json_response(created.dump(), 201, {"Location": location})

    async def get_device(self, request: Request) -> Response:
        app, device = device_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.READER)
        return json_response((await self.store.get_device(app, device)).dump())

    async def update_device(self, request: Request) -> Response:
        app, device = device_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.MANAGER)
        document = parse(DeviceDocument, await json_body(request))
        _same("application", app, document.metadata.application)
        _same("name", device, document.metadata.name)
        await self.store.update_device(app, document)
        return Response(status_code=204)

    async def delete_device(self, request: Request) -> Response:
        app, device = device_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.MANAGER)
        version = precondition(await json_body(request, optional=True), request)
        await self.store.delete_device(app, device, resource_version=version)
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        return [
            Route(f"{BASE}/apps", guarded(self.list_apps), methods=["GET"]),
            Route(f"{BASE}/apps", guarded(self.create_app), methods=["POST"]),
            Route(f"{BASE}/apps/{{app}}", guarded(self.get_app), methods=["GET"]),
            Route(f"{BASE}/apps/{{app}}", guarded(self.update_app), methods=["PUT"]),
            Route(f"{BASE}/apps/{{app}}", guarded(self.delete_app), methods=["DELETE"]),
            Route(f"{BASE}/apps/{{app}}/devices", guarded(self.list_devices), methods=["GET"]),
            Route(f"{BASE}/apps/{{app}}/devices", guarded(self.create_device), methods=["POST"]),
            Route(f"{BASE}/apps/{{app}}/devices/{{device}}", guarded(self.get_device), methods=["GET"]),
            Route(f"{BASE}/apps/{{app}}/devices/{{device}}", guarded(self.update_device), methods=["PUT"]),
            Route(f"{BASE}/apps/{{app}}/devices/{{device}}", guarded(self.delete_device),
                  methods=["DELETE"]),
        ]
