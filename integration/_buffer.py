"""The buffer between a socket's bus pump and its forwarder, bounded in events AND bytes.

A count alone lets one slow socket hold `count` times the largest payload; the byte bound keeps it
near `max_bytes` (one event larger than that still passes, alone). One producer, one consumer.
"""

from __future__ import annotations

from collections import deque

import anyio

from hawser.bus import Delivery


def size_of(delivery: Delivery) -> int:
    """About what the delivery occupies: its data and its attributes."""
    event = delivery.event
    return len(event.data) + sum(len(k) + len(v) for k, v in event.attributes.items())


class DeliveryBuffer:
    def __init__(self, max_count: int, max_bytes: int) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError("the buffer must hold at least one event")
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._items: deque[tuple[Delivery, int]] = deque()
        self.bytes = 0
        self._closed = False
        self._changed = anyio.Event()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, delivery: Delivery) -> None:
        """Wait for room, then add. Raises `anyio.ClosedResourceError` once closed."""
        size = size_of(delivery)
        while not self._closed and self._items and (
                len(self._items) >= self._max_count or self.bytes + size > self._max_bytes):
            await self._changed.wait()
        if self._closed:
            raise anyio.ClosedResourceError
        self._items.append((delivery, size))
        self.bytes += size
        self._notify()

    async def get(self) -> Delivery | None:
        """The oldest delivery; None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            await self._changed.wait()
        delivery, size = self._items.popleft()
        self.bytes -= size
        self._notify()
        return delivery

    def close(self) -> None:
        """No more puts; `get` drains what is left, then returns None."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
