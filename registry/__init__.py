"""The SQL device registry: applications, devices with hashed credentials, members, access tokens,
their Alembic migrations and the registry REST API.

`RegistryStore` (registry.store) is the one object the rest of Hawser holds; device authentication
sees it through the narrow `DeviceDirectory` protocol of `registry.values`. `RegistryStore` is loaded
lazily so that importing the frozen values does not pull in SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.values import ApplicationInfo, DeviceDirectory, DeviceInfo, RegistryChange

if TYPE_CHECKING:
    from registry.store import RegistryStore


def __getattr__(name: str) -> object:
    if name == "RegistryStore":
        from registry.store import RegistryStore

        return RegistryStore
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


__all__ = ["ApplicationInfo", "DeviceDirectory", "DeviceInfo", "RegistryChange", "RegistryStore"]
