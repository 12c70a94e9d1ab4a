"""A bounded LRU with a maximum age whose entries are grouped by (application, device), so that a
registry change can drop exactly what it made stale.

Used by `auth.devices` for verified credentials and resolved gateway targets. Not thread-safe: it
lives on the event loop, like the registry's change listeners that invalidate it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Slot(NamedTuple, Generic[V]):
    expires: float
    application: str
    device: str
    value: V


class GroupedTtlLru(Generic[K, V]):
    """At most `size` entries, each trusted for `ttl_s` seconds. `size == 0` or `ttl_s == 0`
    disables caching (every `get` misses)."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._ttl = ttl_s
        self._clock = clock
        self._entries: OrderedDict[K, _Slot[V]] = OrderedDict()
        self._groups: dict[str, dict[str, set[K]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        slot = self._entries.get(key)
        if slot is None:
            return None
        if slot.expires <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return slot.value

    def put(self, key: K, application: str, device: str, value: V) -> None:
        if self._size <= 0 or self._ttl <= 0:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = _Slot(self._clock() + self._ttl, application, device, value)
        self._groups.setdefault(application, {}).setdefault(device, set()).add(key)
        while len(self._entries) > self._size:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def drop_device(self, application: str, device: str) -> None:
        devices = self._groups.get(application)
        if devices is None:
            return
        for key in devices.pop(device, ()):
            self._entries.pop(key, None)
        if not devices:
            del self._groups[application]

    def drop_application(self, application: str) -> None:
        for keys in self._groups.pop(application, {}).values():
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._groups.clear()

    def _remove(self, key: K) -> None:
        slot = self._entries.pop(key)
        devices = self._groups.get(slot.application)
        if devices is None:
            return
        keys = devices.get(slot.device)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del devices[slot.device]
        if not devices:
            del self._groups[slot.application]
