"""An in-memory `DeviceDirectory` for the unit layer of device authentication (never in the
product): counts its queries and fires change notifications like the real registry."""

from __future__ import annotations

import dataclasses
from collections import Counter

from argon2 import PasswordHasher

from registry.values import (
    ApplicationInfo,
    ChangeListener,
    Credential,
    DeviceInfo,
    PasswordCredential,
    RegistryChange,
    UserCredential,
)

# Cheap hashes for tests; verification reads the cost from the hash itself.
_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def cheap_hash(password: str) -> str:
    return _HASHER.hash(password)


def password(secret: str) -> PasswordCredential:
    return PasswordCredential(cheap_hash(secret))


def user(username: str, secret: str, *, unique: bool = True) -> UserCredential:
    return UserCredential(username, cheap_hash(secret), unique)


class MemoryDirectory:
    def __init__(self) -> None:
        self.apps: dict[str, ApplicationInfo] = {}
        self.devices: dict[tuple[str, str], DeviceInfo] = {}
        self.listeners: list[ChangeListener] = []
        self.queries: Counter[str] = Counter()

    # --- set-up, each notifying listeners as the registry does after a commit ----------------------

    def add_app(self, name: str, *, disabled: bool = False) -> ApplicationInfo:
        app = ApplicationInfo(name, uid=f"uid-{name}", disabled=disabled)
        self.apps[name] = app
        self._notify(RegistryChange("application", name))
        return app

    def update_app(self, name: str, **changes: object) -> None:
        self.apps[name] = dataclasses.replace(self.apps[name], **changes)  # type: ignore[arg-type]
        self._notify(RegistryChange("application", name))

    def add_device(
        self,
        app: str,
        name: str,
        *credentials: Credential,
        disabled: bool = False,
        gateways: tuple[str, ...] = (),
        aliases: tuple[str, ...] = (),
    ) -> DeviceInfo:
        device = DeviceInfo(app, name, uid=f"uid-{app}-{name}", disabled=disabled,
                            credentials=credentials, gateways=gateways, aliases=aliases)
        self.devices[(app, name)] = device
        self._notify(RegistryChange("device", app, name))
        return device

    def update_device(self, app: str, name: str, **changes: object) -> None:
        old = self.devices[(app, name)]
        self.devices[(app, name)] = dataclasses.replace(old, **changes)  # type: ignore[arg-type]
        self._notify(RegistryChange("device", app, name))

    def _notify(self, change: RegistryChange) -> None:
        for listener in self.listeners:
            listener(change)

    # --- DeviceDirectory ---------------------------------------------------------------------------

    async def get_application_info(self, application: str) -> ApplicationInfo | None:
        self.queries["app"] += 1
        return self.apps.get(application)

    async def get_device_info(self, application: str, device: str) -> DeviceInfo | None:
        self.queries["device"] += 1
        return self.devices.get((application, device))

    async def find_device_by_username(self, application: str, username: str) -> DeviceInfo | None:
        self.queries["username"] += 1
        for (app, _), device in self.devices.items():
            if app == application and any(
                isinstance(c, UserCredential) and c.username == username for c in device.credentials
            ):
                return device
        return None

    async def find_device_by_alias(self, application: str, alias: str) -> DeviceInfo | None:
        self.queries["alias"] += 1
        for (app, _), device in self.devices.items():
            if app == application and alias in device.aliases:
                return device
        return None

    def add_change_listener(self, listener: ChangeListener) -> None:
        self.listeners.append(listener)
