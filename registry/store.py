"""`RegistryStore`: the SQL device registry (SQLite by default, PostgreSQL by URL).

Applications, devices with hashed credentials, members and access tokens, behind one object that
also implements `registry.values.DeviceDirectory` for device authentication. Every committed change
bumps the resource's `resourceVersion` and `generation` and then notifies the change listeners.
"""

from __future__ import annotations

import warnings
from types import TracebackType
from typing import Self

from hawser.bus.base import EventBus
from registry._apps import ApplicationOps
from registry._db import create_engine, migrate
from registry._devices import DeviceOps
from registry._tokenstore import TokenOps


class RegistryStore(ApplicationOps, DeviceOps, TokenOps):
    """Open with `await RegistryStore.open(url)`; close with `aclose()` (or `async with`)."""

    _closed = True

    @classmethod
    async def open(cls, url: str, *, bus: EventBus | None = None, migrate: bool = True) -> RegistryStore:
        """Connect (and by default bring the schema up to date). `bus`, if given, gets an
        `events-<app>` topic per application created and loses it when the application goes."""
        engine = create_engine(url)
        try:
            if migrate:
                await _migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        store = cls(engine, bus)
        store._closed = False
        return store

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not self._closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)


_migrate = migrate

__all__ = ["RegistryStore"]
