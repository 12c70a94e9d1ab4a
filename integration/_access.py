"""Who may read an application's events, the one rule both integrations (WebSocket, MQTT) apply.

At least the reader role on the application, within the token's scopes. An unknown application is
refused exactly like a forbidden one, so that nobody learns which applications exist; only a
superuser (who may read everything anyway) is told it does not exist.
"""

from __future__ import annotations

from typing import Protocol

from hawser.access import Principal, Role
from hawser.errors import Forbidden, NotFound
from registry.values import ApplicationInfo


class Memberships(Protocol):
    """What the integrations ask the registry (`registry.store.RegistryStore` implements it)."""

    async def member_role(self, application: str, user: str) -> Role | None: ...

    async def get_application_info(self, application: str) -> ApplicationInfo | None: ...


async def authorize_reader(store: Memberships, principal: Principal, app: str) -> ApplicationInfo:
    """The application if `principal` may read its events; else Forbidden (NotFound for a superuser
    asking for an application that does not exist)."""
    refusal = Forbidden(f"no access to the events of application {app!r}")
    if not principal.may_touch(app):
        raise refusal
    if not principal.superuser:
        role = await store.member_role(app, principal.user)
        if role is None or role < Role.READER:
            raise refusal
    application = await store.get_application_info(app)
    if application is None:
        raise NotFound(f"application {app!r} not found") if principal.superuser else refusal
    return application


__all__ = ["Memberships", "authorize_reader"]
