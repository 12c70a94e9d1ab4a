"""Fixtures of the bus contract suite: one `bus` per backend, a fresh topic per test, and a `probe`
that looks at what a backend stores without going through the `EventBus` protocol."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hawser.bus.base import EventBus
from hawser.bus.embedded import EmbeddedBus

#: How many records a topic holds, or None if the topic does not exist.
Probe = Callable[[str], Awaitable[int | None]]


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventBus]:
    instance: EventBus
    if backend == "embedded":
        instance = EmbeddedBus(tmp_path / "events.db", partitions=3)
    else:
        from hawser.bus.kafka import KafkaBus

        instance = KafkaBus(request.getfixturevalue("kafka_bootstrap"), partitions=3, send_timeout_s=5.0)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.aclose()


@pytest.fixture
def probe(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Probe:
    if backend == "embedded":
        return _embedded_probe(tmp_path / "events.db")
    return _kafka_probe(request.getfixturevalue("kafka_bootstrap"))


def _embedded_probe(path: Path) -> Probe:
    async def count(topic: str) -> int | None:
        with sqlite3.connect(path) as conn:
            if conn.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
                return None
            (n,) = conn.execute("SELECT COUNT(*) FROM records WHERE topic = ?", (topic,)).fetchone()
            return int(n)

    return count


def _kafka_probe(bootstrap: str) -> Probe:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    async def count(topic: str) -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described["error_code"] != 0:
            return None
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
        finally:
            await consumer.stop()
        return sum(int(ends[tp]) - int(starts[tp]) for tp in tps)

    return count
