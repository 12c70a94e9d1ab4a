"""The MQTT device endpoint against clients that bend the rules over a real socket: retransmissions
while the bus holds a publish, subscriptions without end, a CONNECT whose socket is gone before its
credentials were checked, and handler failures that must not leave tasks or registry entries behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from endpoints._mqtt_session import MAX_INBOXES, DeviceSession
from hawser.bus.base import EventBus
from hawser.bus.embedded import EmbeddedBus
from hawser.events import CloudEvent
from hawser.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    ProtocolVersion,
    PubAck,
    Publish,
    Reason,
    SubAck,
    Subscribe,
    SubscriptionRequest,
)
from tests.endpoints.mqtt_server import World, publish_ok, running_endpoint
from tests.helpers import eventually
from tests.mqtt_raw import RawClient

V3, V5 = ProtocolVersion.V311, ProtocolVersion.V5


class HeldBus:
    """A real bus whose `send` can be held (a timing double: every send reaches the real bus)."""

    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self.reached = asyncio.Event()
        #: Sends waiting at the gate now.
        self.waiting = 0
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self.reached.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        self.reached.set()
        self.waiting += 1
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1
        await self.bus.send(topic, event, key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[World, HeldBus]]:
    bus = EmbeddedBus(tmp_path / "events.db", partitions=1)
    await bus.start()
    gate = HeldBus(bus)
    try:
        async with running_endpoint(cast(EventBus, gate), connect_timeout_s=1.0) as world:
            yield world, gate
    finally:
        gate.release()
        await bus.aclose()


async def connected(world: World, version: ProtocolVersion, client_id: str = "raw") -> RawClient:
    client = await RawClient.open(world.port, version)
    client.send(Connect(client_id, version, username=f"d@{world.a}", password=b"pw"))
    connack = await client.receive()
    assert isinstance(connack, ConnAck), connack
    assert connack.reason is Reason.SUCCESS, connack
    return client


async def test_v311_retransmission_in_flight_is_not_acknowledged_twice(held: tuple[World, HeldBus]) -> None:
    """A 3.1.1 client may re-send an un-acknowledged publish with DUP. Acknowledging both copies
    would send a second PUBACK for an id the client may have reused meanwhile: a success for a
    message the bus does not hold yet."""
    world, bus = held
    async with await connected(world, V3) as client:
        await world.reader(world.a).one()  # the connected event
        bus.hold()
        client.send(Publish("t", b"first", qos=1, packet_id=1))
        await asyncio.wait_for(bus.reached.wait(), 10)
        client.send(Publish("t", b"first", qos=1, packet_id=1, dup=True), Publish("t", b"second", qos=1, packet_id=2))
        await eventually(lambda: world.sessions and all(s.connection.inflight == 2 for s in world.listener._streams))
        # Both at the gate before it opens: a publish whose task had not reached it yet would pass
        # straight through and could reach the bus before the held one (no order is promised then).
        await eventually(lambda: bus.waiting == 2)
        bus.release()
        acks = [await client.receive(), await client.receive()]
        assert acks == [PubAck(1), PubAck(2)], acks
    events = await world.reader(world.a).take(2)
    assert [e.data for e in events] == [b"first", b"second"]


@pytest.mark.parametrize("version", [pytest.param(V3, id="v311"), pytest.param(V5, id="v5")])
async def test_inbox_subscriptions_of_one_connection_are_bounded(held: tuple[World, HeldBus],
                                                                   version: ProtocolVersion) -> None:
    world, _ = held
    async with await connected(world, version) as client:
        filters = [f"command/inbox/dev{n}/#" for n in range(MAX_INBOXES + 10)]
        client.send(Subscribe(1, tuple(SubscriptionRequest(f, qos=1) for f in filters)))
        suback = await client.receive()
        assert isinstance(suback, SubAck)
        granted = [r for r in suback.reasons if not r.is_error]
        assert len(granted) == MAX_INBOXES
        refused = Reason.QUOTA_EXCEEDED if version is V5 else Reason.UNSPECIFIED_ERROR  # 3.1.1: 0x80
        assert set(suback.reasons[MAX_INBOXES:]) == {refused}
        (session,) = world.sessions.sessions_of(world.a, "d")
        assert len(world.sessions.filters(session)) == MAX_INBOXES
        # A filter it holds already is granted again.
        client.send(Subscribe(2, (SubscriptionRequest(filters[0], qos=1),)))
        assert await client.receive() == SubAck(2, (Reason.GRANTED_QOS_1,))


class HeldAuthenticator:
    """The endpoint's authenticator with its answers held until `release` (timing only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    async def authenticate(self, credentials: Any, as_device: str | None = None) -> Any:
        self.reached.set()
        await self.gate.wait()
        return await self.inner.authenticate(credentials, as_device)


async def test_a_newcomer_gone_before_its_credentials_were_checked_takes_nothing_over(
    held: tuple[World, HeldBus],
) -> None:
    """The socket of a second connection with the same client id closes (its client gave up, or the
    connect timeout struck) while its password is checked: the live session stays, and applications
    see no connected/disconnected events of a connection that never was."""
    world, _ = held
    reader = world.reader(world.a)
    async with await connected(world, V5, client_id="c1") as old:
        assert (await reader.one()).data == b'{"connected":true}'
        slow = HeldAuthenticator(world.endpoint.authenticator)
        world.endpoint.authenticator = cast(Any, slow)
        newcomer = await RawClient.open(world.port, V5)
        newcomer.send(Connect("c1", V5, username=f"d@{world.a}", password=b"pw"))
        await asyncio.wait_for(slow.reached.wait(), 10)
        newcomer.writer.transport.abort()
        await eventually(lambda: len(world.listener._streams) == 1)
        slow.gate.set()
        await eventually(lambda: len(world.listener._tasks) <= 1)
        assert len(world.listener._tasks) == 1, "the live session was taken over"
        # The old connection still serves; the next event is its publish.
        old.send(Publish("t", b"still here", qos=1, packet_id=1))
        assert await old.receive() == PubAck(1)
        assert (await reader.one()).data == b"still here"
        assert len(world.sessions) == 1


async def test_a_failing_session_settles_its_publishes_and_still_says_disconnected(
    held: tuple[World, HeldBus], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in the session (here: answering a SUBSCRIBE) ends the connection; the publish it had
    running is not left behind as an orphan task, and applications still see the device leave."""
    world, bus = held
    reader = world.reader(world.a)

    failed = asyncio.Event()

    def broken(self: DeviceSession, packet: Subscribe) -> SubAck:
        failed.set()
        raise RuntimeError("a bug")

    monkeypatch.setattr(DeviceSession, "_subscribe", broken)
    async with await connected(world, V5) as client:
        assert (await reader.one()).data == b'{"connected":true}'
        bus.hold()
        client.send(Publish("t", b"held", qos=1, packet_id=1))
        await asyncio.wait_for(bus.reached.wait(), 10)
        client.send(Subscribe(2, (SubscriptionRequest("command/inbox/#", qos=0),)))
        await asyncio.wait_for(failed.wait(), 10)
        bus.release()
        packets = await client.until_closed()
    assert packets[0] == PubAck(1), packets
    assert isinstance(packets[-1], Disconnect)
    assert packets[-1].reason is Reason.UNSPECIFIED_ERROR
    events = await reader.take(2)
    assert [e.data for e in events] == [b"held", b'{"connected":false}']
    await eventually(lambda: len(world.sessions) == 0 and not world.listener._tasks)
    assert "handler failed" in caplog.text
    await publish_ok(world.port, world)
