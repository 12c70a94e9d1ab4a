"""State shared by the parts of `RegistryStore`: the engine, its sessions, the bus, the change
listeners, and the small rules every write follows (version checks, version bumps, notify after commit).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hawser.bus.base import EventBus
from hawser.errors import StaleResourceVersion
from registry._db import WRITE_OPTION
from registry.values import ChangeListener, RegistryChange

log = logging.getLogger("registry")


def new_version() -> str:
    return str(uuid.uuid4())


def check_version(expected: str | None, current: str) -> None:
    """Optimistic concurrency: a given, non-empty resourceVersion must be the current one."""
    if expected and expected != current:
        raise StaleResourceVersion(
            f"resourceVersion {expected[:40]!r} is not the current one; read again and retry"
        )


class _NamedLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class StoreBase:
    def __init__(self, engine: AsyncEngine, bus: EventBus | None) -> None:
        self._engine = engine
        self._bus = bus
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._listeners: list[ChangeListener] = []
        #: SQLite has one database-wide write lock: nothing slow (bus, KDF) may run while holding it.
        self._serial_writes = engine.dialect.name == "sqlite"
        self._name_locks: dict[str, _NamedLock] = {}

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success."""
        async with self._sessions() as session, session.begin():
            await session.connection(execution_options={WRITE_OPTION: True})
            yield session

    @asynccontextmanager
    async def _name_lock(self, name: str) -> AsyncIterator[None]:
        """Serialise, within this process, the changes that pair a row with bus work for `name`."""
        entry = self._name_locks.get(name)
        if entry is None:
            entry = self._name_locks[name] = _NamedLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._name_locks[name]

    def add_change_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def remove_change_listener(self, listener: ChangeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, change: RegistryChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("change listener %r failed on %r", listener, change)
