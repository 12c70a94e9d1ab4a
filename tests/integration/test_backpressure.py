"""The socket's pump/forwarder in memory: a client that stops reading bounds what is taken from the bus,
and only what was sent gets committed. (Fakes of the socket and subscription, for this unit only; the
real-socket behaviour is in test_websocket.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self, cast

from starlette.websockets import WebSocket

from hawser.bus import Delivery
from hawser.bus._embedded_store import partition_for
from hawser.bus.embedded import EmbeddedBus
from hawser.events import EventOrigin, new_event
from integration.websocket import _stream
from tests.bus.test_contract import KEYS, event
from tests.helpers import eventually


class StuckSocket:
    """Accepts frames only while `flowing` is set; the client leaves when `gone` is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.flowing = asyncio.Event()
        self.gone = asyncio.Event()
        self.closed_with: int | None = None

    async def send_text(self, text: str) -> None:
        await self.flowing.wait()
        self.sent.append(text)

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


class EndlessSubscription:
    def __init__(self, limit: int | None = None) -> None:
        self.pulled = 0
        self.limit = limit
        self.committed: list[int] = []
        self.iterator_closed = False
        origin = EventOrigin("app", "u", "dev", "u", "dev", "u")
        self.event = new_event(origin, channel="c", data=b"{}", instance="i", content_type="application/json")

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        try:
            while self.limit is None or self.pulled < self.limit:
                await asyncio.sleep(0)
                self.pulled += 1
                yield Delivery("events-app", 0, self.pulled - 1, "app/dev", self.event, 0)
        finally:
            self.iterator_closed = True

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._deliveries()

    def holds(self, topic: str, partition: int) -> bool:
        return True

    async def commit(self, delivery: Delivery) -> None:
        self.committed.append(delivery.offset)

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


async def settle(rounds: int = 200) -> None:
    """Let every runnable task run for a while (to show that nothing more happens)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_a_stuck_client_bounds_what_is_read_from_the_bus() -> None:
    socket, subscription = StuckSocket(), EndlessSubscription()
    task = asyncio.create_task(_stream(cast(WebSocket, socket), subscription, 4, committing=True))
    try:
        await eventually(lambda: subscription.pulled >= 6, message="the buffer to fill")
        await settle()
        # one in the blocked send, four in the buffer, one in the pump's blocked put
        assert subscription.pulled == 6
        assert subscription.committed == []
        socket.gone.set()
        await asyncio.wait_for(task, 5)
    finally:
        task.cancel()
    assert subscription.committed == [], "nothing was sent, so nothing is committed"
    assert subscription.iterator_closed
    assert socket.closed_with is None, "nobody to close for when the client left"


async def test_what_was_sent_is_committed_and_the_end_of_the_bus_closes_the_socket() -> None:
    socket, subscription = StuckSocket(), EndlessSubscription(limit=50)
    socket.flowing.set()
    await asyncio.wait_for(_stream(cast(WebSocket, socket), subscription, 4, committing=True), 5)
    assert len(socket.sent) == 50
    assert subscription.committed[-1] == 49
    assert socket.closed_with == 1001


async def test_without_a_group_nothing_is_committed() -> None:
    socket, subscription = StuckSocket(), EndlessSubscription(limit=10)
    socket.flowing.set()
    await asyncio.wait_for(_stream(cast(WebSocket, socket), subscription, 4, committing=False), 5)
    assert len(socket.sent) == 10
    assert subscription.committed == []


async def test_read_ahead_of_a_partition_that_moved_is_not_sent_twice(tmp_path: Path) -> None:
    """Member A's buffer holds events of partition 1 when B joins and takes partition 1: A drops them,
    B reads them from the last commit; every event reaches the group's sockets once."""
    key = next(k for k in KEYS if partition_for(k, 2) == 1)
    async with EmbeddedBus(tmp_path / "events.db", partitions=2) as bus:
        await bus.ensure_topic("t")
        a, b = StuckSocket(), StuckSocket()
        sub_a = await bus.subscribe(["t"], "g")
        task_a = asyncio.create_task(_stream(cast(WebSocket, a), sub_a, 4, committing=True))
        for n in range(20):
            await bus.send("t", event(n), key)
        await settle()  # A's pump fills its buffer while its client is slow
        sub_b = await bus.subscribe(["t"], "g")
        task_b = asyncio.create_task(_stream(cast(WebSocket, b), sub_b, 4, committing=True))
        a.flowing.set()
        b.flowing.set()
        await eventually(lambda: len({*a.sent, *b.sent}) == 20, message="every event")
        await settle()
        a.gone.set()
        b.gone.set()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), 5)
        await sub_a.aclose()
        await sub_b.aclose()
    assert len(a.sent) + len(b.sent) == 20, "no event sent twice"
