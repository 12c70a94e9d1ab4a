"""The events topic an application owns, against the real embedded bus: a re-created name starts
empty, a refused create never touches the existing topic, and no bus work runs under SQLite's
database-wide write lock (other writes go on while the bus is slow)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from hawser.bus.base import Subscription
from hawser.bus.embedded import EmbeddedBus
from hawser.errors import AlreadyExists
from hawser.events import CloudEvent, EventOrigin, events_topic, new_event
from registry.documents import ApplicationDocument
from registry.store import RegistryStore
from registry.tokens import TokenRecord
from tests.helpers import eventually

TOPIC = events_topic("app1")


def app(name: str = "app1") -> ApplicationDocument:
    return ApplicationDocument.model_validate({"metadata": {"name": name}})


def event(data: bytes) -> CloudEvent:
    origin = EventOrigin("app1", "uid", "d", "d-uid", "d", "d-uid")
    return new_event(origin, channel="t", data=data, instance="test", content_type="text/plain")


async def everything(bus: EmbeddedBus, topic: str) -> list[bytes]:
    """Every event the topic holds, read from offset 0 of each partition."""
    wanted = [((topic, p), 0) for p in range(bus.partitions(topic))]
    return [d.event.data for d in await bus.fetch(wanted)] if wanted else []


class GatedBus:
    """A real bus behind a gate: records each topic call and, while `hold` is set, parks it until
    `release` (a test double for timing only; every call reaches the real bus)."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self.calls: list[tuple[str, str]] = []
        self.held = asyncio.Event()
        self.reached = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _gate(self, call: str, topic: str) -> None:
        self.calls.append((call, topic))
        self.reached.set()
        await self._open.wait()

    async def start(self) -> None:
        await self.bus.start()

    async def aclose(self) -> None:
        await self.bus.aclose()

    async def ensure_topic(self, topic: str) -> None:
        await self._gate("ensure", topic)
        await self.bus.ensure_topic(topic)

    async def delete_topic(self, topic: str) -> None:
        await self._gate("delete", topic)
        await self.bus.delete_topic(topic)

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        await self.bus.send(topic, event, key)

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        return await self.bus.subscribe(topics, group)


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[EmbeddedBus]:
    async with EmbeddedBus(tmp_path / "events.db") as opened:
        yield opened


async def test_recreated_application_starts_with_an_empty_topic(db_url: str, bus: EmbeddedBus) -> None:
    async with await RegistryStore.open(db_url, bus=bus) as store:
        await store.create_application(app(), creator="alice")
        await bus.send(TOPIC, event(b"alice-1"), "app1/d")
        await store.delete_application("app1")
        # A send racing the delete (or a delete whose topic step failed) leaves the topic behind.
        await bus.ensure_topic(TOPIC)
        await bus.send(TOPIC, event(b"alice-2"), "app1/d")
        assert await everything(bus, TOPIC) == [b"alice-2"]

        await store.create_application(app(), creator="bob")
        assert bus.partitions(TOPIC) > 0
        assert await everything(bus, TOPIC) == []


async def test_refused_create_leaves_the_topic_alone(db_url: str, bus: EmbeddedBus) -> None:
    async with await RegistryStore.open(db_url, bus=bus) as store:
        await store.create_application(app(), creator="alice")
        await bus.send(TOPIC, event(b"kept"), "app1/d")
        with pytest.raises(AlreadyExists):
            await store.create_application(app(), creator="bob")
        assert await everything(bus, TOPIC) == [b"kept"]


async def test_concurrent_creates_of_one_name(db_url: str, bus: EmbeddedBus) -> None:
    gated = GatedBus(bus)
    async with await RegistryStore.open(db_url, bus=gated) as store:
        gated.hold()
        first = asyncio.create_task(store.create_application(app(), creator="alice"))
        await asyncio.wait_for(gated.reached.wait(), 10)
        second = asyncio.create_task(store.create_application(app(), creator="bob"))
        gated.release()
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert results[0].metadata.name == "app1"  # type: ignore[union-attr]
        assert isinstance(results[1], AlreadyExists)
        assert gated.calls == [("delete", TOPIC), ("ensure", TOPIC)]  # the loser never touched it
        assert await store.member_role("app1", "alice") is not None
        assert await store.member_role("app1", "bob") is None


@pytest.mark.postgres
async def test_two_instances_creating_one_name(postgres_url: str, bus: EmbeddedBus) -> None:
    """Across processes only the database orders creators: the loser blocks on the winner's
    uncommitted row, then fails, without touching the bus."""
    gated, other = GatedBus(bus), GatedBus(bus)
    async with await RegistryStore.open(postgres_url, bus=gated) as one, \
            await RegistryStore.open(postgres_url, bus=other, migrate=False) as two:
        gated.hold()
        first = asyncio.create_task(one.create_application(app(), creator="alice"))
        await asyncio.wait_for(gated.reached.wait(), 10)
        second = asyncio.create_task(two.create_application(app(), creator="bob"))

        async def blocked() -> bool:
            async with one.engine.connect() as c:
                waiting = await c.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"))
            return bool(waiting)

        await eventually(blocked, message="the second creator never waited on the first's row")
        gated.release()
        await first
        await bus.send(TOPIC, event(b"winner"), "app1/d")
        with pytest.raises(AlreadyExists):
            await second
        assert other.calls == []
        assert await everything(bus, TOPIC) == [b"winner"]


async def test_other_writes_go_on_while_the_bus_is_slow(db_url: str, bus: EmbeddedBus) -> None:
    gated = GatedBus(bus)
    async with await RegistryStore.open(db_url, bus=gated) as store:
        await store.create_application(app("other"))
        gated.hold()
        creating = asyncio.create_task(store.create_application(app(), creator="alice"))
        await asyncio.wait_for(gated.reached.wait(), 10)
        # Before the fix this waited for SQLite's write lock (busy_timeout: 30 s).
        await asyncio.wait_for(store.add_token(TokenRecord(
            id="t1", hash="0" * 64, user="carol", created=datetime.now(UTC))), 5)
        await asyncio.wait_for(store.set_members("other", {}), 5)
        gated.release()
        await creating
        assert await store.get_token("t1") is not None
