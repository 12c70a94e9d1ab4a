"""One subscription's flow in memory: the QoS 1 window and what gets committed, read-ahead of a moved
partition, and a bug in delivery. (A fake of the MQTT stream, for this unit only; the real-socket
behaviour is in test_mqtt_delivery.py. The bus is the real embedded log, or a recording fake.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self, cast

import pytest
from prometheus_client import REGISTRY

from hawser.bus import Delivery, Subscription
from hawser.bus._embedded_store import partition_for
from hawser.bus.embedded import EmbeddedBus
from hawser.mqtt.packets import Packet, ProtocolVersion, Publish, Reason
from hawser.mqtt.stream import MqttStream
from integration._buffer import DeliveryBuffer
from integration._mqtt_events import ContentMode
from integration._mqtt_flow import Flow, FlowSpec, Window
from integration._mqtt_topics import AppFilter
from tests.bus.test_contract import KEYS, event
from tests.helpers import eventually


class FakeConnection:
    version = ProtocolVersion.V5

    def __init__(self) -> None:
        self._last = 0

    def next_packet_id(self) -> int:
        self._last += 1
        return self._last


class FakeStream:
    """Takes packets only while `flowing` is set (drain waits otherwise)."""

    def __init__(self, *, flowing: bool = True) -> None:
        self.connection = FakeConnection()
        self.sent: list[Publish] = []
        self.flowing = asyncio.Event()
        if flowing:
            self.flowing.set()
        self.ended_by: str | None = None
        self.peer = "fake"

    def send(self, packet: Packet) -> bool:
        if self.ended_by is not None:
            return False
        assert isinstance(packet, Publish)
        self.sent.append(packet)
        return True

    async def drain(self) -> None:
        await self.flowing.wait()


class RecordingSubscription:
    """`limit` deliveries of one partition, offsets 0.., then it waits; records commits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.committed: list[int] = []
        self.closed = False

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        for offset in range(self.limit):
            yield Delivery("events-app", 0, offset, KEYS[0], event(offset), 0)
        await asyncio.Event().wait()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._deliveries()

    def holds(self, topic: str, partition: int) -> bool:
        return True

    async def commit(self, delivery: Delivery) -> None:
        self.committed.append(delivery.offset)

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def spec(qos: int, share: str | None = "g") -> FlowSpec:
    return FlowSpec(AppFilter("app", share, "app/app"), qos, ContentMode.BINARY, (), "app-uid")


def flow(stream: FakeStream, subscription: Subscription, spec: FlowSpec, failures: list[Reason],
         owners: dict[int, Flow] | None = None, *, inflight: int = 4, shared: Window | None = None) -> Flow:
    return Flow(cast(MqttStream, stream), subscription, spec, shared=shared or Window(100), inflight=inflight,
                buffer=DeliveryBuffer(4, 1 << 20), owners={} if owners is None else owners,
                on_failure=lambda reason, _: failures.append(reason))


def event_ids(*streams: FakeStream) -> list[str]:
    return [dict(p.properties.user_properties)["id"] for stream in streams for p in stream.sent]


async def test_the_qos1_window_and_contiguous_commits() -> None:
    failures: list[Reason] = []
    stream, subscription = FakeStream(), RecordingSubscription(limit=10)
    owners: dict[int, Flow] = {}
    shared = Window(3)  # the client's Receive Maximum is below the subscription's window
    unit = flow(stream, cast(Subscription, subscription), spec(1), failures, owners, shared=shared)
    task = asyncio.create_task(unit.run())
    try:
        await eventually(lambda: len(stream.sent) == 3, message="the window to fill")
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(stream.sent) == 3, "nothing beyond the client's Receive Maximum"
        first, second, third = (p.packet_id or 0 for p in stream.sent)
        owners.pop(second).acked(second)
        await eventually(lambda: len(stream.sent) == 4, message="a slot to free")
        assert subscription.committed == [], "offset 0 is not acknowledged"
        owners.pop(first).acked(first)
        await eventually(lambda: subscription.committed == [1], message="0 and 1 to be committed")
        owners.pop(third).acked(third)
        await eventually(lambda: subscription.committed == [1, 2], message="2 to be committed")
        assert all(p.qos == 1 for p in stream.sent)
    finally:
        unit.stop()
        await asyncio.wait_for(task, 5)
    assert subscription.closed
    assert subscription.committed == [1, 2], "offsets 3.. were sent but never acknowledged"
    assert shared.used == len(stream.sent) - 3 == 3, "un-acknowledged ones keep their slots until acknowledged"
    assert failures == []


@pytest.mark.parametrize(("share", "last_commit"), [("g", 9), (None, None)])
async def test_qos0_commits_on_write_and_without_a_group_nothing_is_committed(
    share: str | None, last_commit: int | None
) -> None:
    failures: list[Reason] = []
    stream, subscription = FakeStream(), RecordingSubscription(limit=10)
    unit = flow(stream, cast(Subscription, subscription), spec(0, share), failures)
    task = asyncio.create_task(unit.run())
    await eventually(lambda: len(stream.sent) == 10, message="every event")
    await eventually(lambda: share is None or subscription.committed[-1:] == [9], message="the last commit")
    unit.stop()
    await asyncio.wait_for(task, 5)
    assert (subscription.committed[-1] if subscription.committed else None) == last_commit
    assert all(p.qos == 0 and p.packet_id is None for p in stream.sent)


async def test_read_ahead_of_a_partition_that_moved_is_not_sent_twice(tmp_path: Path) -> None:
    """Member A's buffer holds events of partition 1 when B joins and takes partition 1: A drops them,
    B reads them from the last commit; every event reaches the group's clients once."""
    key = next(k for k in KEYS if partition_for(k, 2) == 1)
    failures: list[Reason] = []
    dropped_before = REGISTRY.get_sample_value("hawser_mqtt_integration_events_dropped_moved_total") or 0.0
    async with EmbeddedBus(tmp_path / "events.db", partitions=2) as bus:
        await bus.ensure_topic("t")
        a, b = FakeStream(flowing=False), FakeStream(flowing=False)
        flow_a = flow(a, await bus.subscribe(["t"], "g"), spec(0), failures)
        task_a = asyncio.create_task(flow_a.run())
        for n in range(20):
            await bus.send("t", event(n), key)
        for _ in range(200):  # A's pump fills its buffer while its client is slow
            await asyncio.sleep(0)
        flow_b = flow(b, await bus.subscribe(["t"], "g"), spec(0), failures)
        task_b = asyncio.create_task(flow_b.run())
        a.flowing.set()
        b.flowing.set()
        await eventually(lambda: len(set(event_ids(a, b))) == 20, message="every event")
        for _ in range(200):
            await asyncio.sleep(0)
        flow_a.stop()
        flow_b.stop()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), 5)
    assert len(event_ids(a, b)) == 20, "no event sent twice"
    assert b.sent, "B took the partition over"
    dropped = REGISTRY.get_sample_value("hawser_mqtt_integration_events_dropped_moved_total") or 0.0
    assert dropped > dropped_before, "A had read ahead of the partition it lost"
    assert failures == []


async def test_a_bug_in_delivery_ends_the_connection_and_leaves_the_bus() -> None:
    class BrokenStream(FakeStream):
        def send(self, packet: Packet) -> bool:
            raise RuntimeError("a bug")

    failures: list[Reason] = []
    stream, subscription = BrokenStream(), RecordingSubscription(limit=1)
    await asyncio.wait_for(flow(stream, cast(Subscription, subscription), spec(1), failures).run(), 5)
    assert failures == [Reason.UNSPECIFIED_ERROR]
    assert subscription.closed
