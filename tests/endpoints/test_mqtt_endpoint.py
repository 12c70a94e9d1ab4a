"""The MQTT device endpoint over real sockets with real clients (paho-mqtt 3.1.1 and 5), over the
embedded log: publishes and their acknowledgements, gateways, CONNECT refusals, connection events,
takeover, tenant isolation and command inbox subscriptions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes

from command.sessions import Command, InboxFilter, InboxScope
from endpoints._mqtt_session import OUTBOX
from hawser.bus.embedded import EmbeddedBus
from hawser.config import TlsSettings
from hawser.events import CloudEvent
from hawser.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Properties,
    ProtocolVersion,
    PubAck,
    Publish,
    Reason,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
)
from hawser.mqtt.stream import start_listener
from hawser.tls import certificate_files, server_context
from tests.endpoints.mqtt_server import World, publish_ok, running_endpoint
from tests.helpers import eventually
from tests.mqtt_raw import RawClient
from tests.paho import V5, V311, Paho, paho_client, paho_properties

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    bus = EmbeddedBus(tmp_path / "events.db", partitions=1)  # one partition: one order for all events
    await bus.start()
    try:
        async with running_endpoint(bus) as running:
            yield running
    finally:
        await bus.aclose()


def is_connection(event: CloudEvent, device: str | None = None, connected: bool | None = None) -> bool:
    if event.type != "io.drogue.connection.v1":
        return False
    if device is not None and event.attributes["device"] != device:
        return False
    return connected is None or json.loads(event.data) == {"connected": connected}


async def device_event(world: World, app: str | None = None) -> CloudEvent:
    """The next event of the app that is not a connection event."""
    _, event = await world.reader(app or world.a).until(lambda e: not is_connection(e))
    return event


# --- publishing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1])
async def test_publish_becomes_an_event(world: World, version: int, qos: int) -> None:
    async with paho_client(world.port, f"d@{world.a}", "pw", version=version, client_id="c1") as device:
        reason = await device.publish("telemetry", b'{"t": 21.5}', qos=qos)
        assert not reason.is_failure
        event = await device_event(world)
    assert event.data == b'{"t": 21.5}'
    attributes = dict(event.attributes)
    assert attributes["type"] == "io.drogue.event.v1"
    assert attributes["subject"] == "telemetry"
    assert attributes["source"] == f"drogue://{world.a}/d"
    assert (attributes["application"], attributes["device"], attributes["sender"]) == (world.a, "d", "d")
    assert attributes["partitionkey"] == f"{world.a}/d"
    assert attributes["instance"] == "mqtt-test"
    assert "datacontenttype" not in attributes  # MQTT 3.1.1 has no content type; v5 did not send one


async def test_v5_content_type_and_user_properties_flow_into_the_event(world: World) -> None:
    properties = paho_properties(ContentType="application/json",
                                 UserProperty=[("trace", "abc"), ("traceId", "ignored"), ("device", "no")])
    async with paho_client(world.port, f"d@{world.a}", "pw") as device:
        assert not (await device.publish("temp", b'{"t":1}', properties=properties)).is_failure
        event = await device_event(world)
    assert event.attributes["datacontenttype"] == "application/json"
    assert event.attributes["trace"] == "abc"
    assert "traceId" not in event.attributes
    assert event.attributes["device"] == "d"


@pytest.mark.parametrize("version", VERSIONS)
async def test_username_credential_with_the_device_in_the_client_id(world: World, version: int) -> None:
    async with paho_client(world.port, "user1", "upw", version=version, client_id=f"u@{world.a}") as device:
        assert not (await device.publish("t", b"x")).is_failure
        event = await device_event(world)
    assert event.attributes["device"] == "u"


@pytest.mark.parametrize("version", VERSIONS)
async def test_publishes_are_acknowledged_in_order_and_reach_the_bus_in_order(world: World, version: int) -> None:
    count = 60  # more than the window (16): the endpoint stops reading while it is full (3.1.1: paho sends 20)
    inflight = 16 if version == V5 else 20
    async with paho_client(world.port, f"d@{world.a}", "pw", version=version, inflight=inflight) as device:
        futures = [device.publish_nowait("seq", str(n).encode()) for n in range(count)]
        reasons = await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert not any(reason.is_failure for reason in reasons)
        events = [await device_event(world) for _ in range(count)]
    assert [int(e.data) for e in events] == list(range(count))


# --- gateways -------------------------------------------------------------------------------------


async def test_gateway_publishes_for_a_device_behind_it(world: World) -> None:
    async with paho_client(world.port, f"gw@{world.a}", "gwpw") as gateway:
        assert not (await gateway.publish("telemetry/th/1", b"1")).is_failure
        assert not (await gateway.publish("telemetry/gw", b"2")).is_failure  # as itself, by name
        first, second = await device_event(world), await device_event(world)
    assert (first.attributes["device"], first.attributes["sender"], first.attributes["subject"]) == (
        "th/1", "gw", "telemetry")
    assert first.attributes["partitionkey"] == f"{world.a}/th%2F1"
    assert (second.attributes["device"], second.attributes["sender"]) == ("gw", "gw")


async def test_forbidden_as_device_is_refused_with_0x87_in_v5(world: World) -> None:
    async with paho_client(world.port, f"gw@{world.a}", "gwpw") as gateway:
        for topic in ("telemetry/other", "telemetry/d", "telemetry/nobody"):
            assert (await gateway.publish(topic, b"x")).value == 0x87, topic
        # The connection stays usable.
        assert not (await gateway.publish("telemetry/th/1", b"ok")).is_failure
        event = await device_event(world)
    assert event.data == b"ok"


async def test_forbidden_as_device_disconnects_a_v311_client(world: World) -> None:
    async with paho_client(world.port, f"gw@{world.a}", "gwpw", version=V311) as gateway:
        pending = gateway.publish_nowait("telemetry/other", b"x")
        await gateway.wait_disconnected()
        assert not pending.done(), "a 3.1.1 publish that was refused must not be acknowledged"
    await publish_ok(world.port, world, version=V311)


# --- refusals of a publish --------------------------------------------------------------------------


async def test_v5_publish_refusals(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "events.db", partitions=1)
    await bus.start()
    try:
        async with running_endpoint(bus, max_payload_bytes=100) as world:
            async with paho_client(world.port, f"d@{world.a}", "pw") as device:
                json_type = paho_properties(ContentType="application/json")
                assert (await device.publish("t", b"x" * 101)).value == 0x97  # quota exceeded
                assert (await device.publish("t", b"{bad", properties=json_type)).value == 0x99
                assert (await device.publish("t/", b"x")).value == 0x90
                assert (await device.publish("bad channel", b"x")).value == 0x90
                assert not (await device.publish("t", b"x" * 100)).is_failure  # at the limit: fine
                # A packet over the limit (payload limit + headroom) ends the connection: 0x95.
                device.publish_nowait("t", b"x" * (100 + 17 * 1024))
                assert (await device.wait_disconnected()).value == 0x95
            event = await device_event(world)
            assert len(event.data) == 100
            await publish_ok(world.port, world)
    finally:
        await bus.aclose()


async def test_v311_refused_qos1_publish_disconnects_and_qos0_is_dropped(world: World) -> None:
    async with paho_client(world.port, f"d@{world.a}", "pw", version=V311) as device:
        assert not (await device.publish("/bad", b"dropped", qos=0)).is_failure  # written, dropped
        assert not (await device.publish("t", b"kept", qos=1)).is_failure
        assert (await device_event(world)).data == b"kept"
        pending = device.publish_nowait("/bad", b"x", qos=1)
        await device.wait_disconnected()
        assert not pending.done()


# --- CONNECT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password", "client_id", "v5_reason"),
    [
        ("d@{a}", "wrong", "", 0x86),
        ("nobody@{a}", "pw", "", 0x86),
        ("d@nowhere", "pw", "", 0x86),
        ("d", "pw", "", 0x86),  # no application, and the client id names none either
        (None, None, "", 0x86),
        ("dis@{a}", "pw", "", 0x87),
        ("user1", "wrong", "u@{a}", 0x86),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
async def test_connect_refused(
    world: World, version: int, username: str | None, password: str | None, client_id: str, v5_reason: int
) -> None:
    device = Paho(client_id.format(a=world.a), version=version,
                  username=username.format(a=world.a) if username else None, password=password)
    try:
        reason = await device.connect(world.port)
    finally:
        await device.aclose()
    assert reason.is_failure
    # paho reports a 3.1.1 return code as the MQTT 5 reason it stands for; the raw tests check the bytes.
    assert reason.value == v5_reason


async def test_v311_persistent_session_is_refused_with_identifier_rejected(world: World) -> None:
    device = Paho("keep", version=V311, username=f"d@{world.a}", password="pw", clean=False)
    try:
        assert (await device.connect(world.port)).value == 0x85  # paho's name for 3.1.1 return code 2
    finally:
        await device.aclose()


async def test_v5_session_expiry_is_answered_with_zero(world: World) -> None:
    device = Paho("keep", username=f"d@{world.a}", password="pw", clean=False)
    try:
        asked = paho_properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)
        reason = await device.connect(world.port, properties=asked)
        assert not reason.is_failure
        assert device.connack_properties is not None
        # paho's Properties set their attributes dynamically: read them as its JSON view.
        properties = device.connack_properties.json()  # type: ignore[no-untyped-call]
        assert properties["SessionExpiryInterval"] == 0
        assert properties["MaximumQoS"] == 1
        assert properties["RetainAvailable"] == 0
        assert properties["SharedSubscriptionAvailable"] == 0
        assert properties["ReceiveMaximum"] == 16
        assert not (await device.publish("t", b"x")).is_failure
    finally:
        await device.aclose()


# --- connection events and takeover ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_connection_events_around_a_clean_session(world: World, version: int) -> None:
    async with paho_client(world.port, f"d@{world.a}", "pw", version=version) as device:
        assert not (await device.publish("t", b"1")).is_failure
    events = await world.reader(world.a).take(3)
    assert [is_connection(e, "d", True) for e in events] == [True, False, False]
    assert events[1].data == b"1"
    assert is_connection(events[2], "d", False)
    connected = events[0].attributes
    assert (connected["subject"], connected["datacontenttype"]) == ("connection", "application/json")
    assert (connected["sender"], connected["partitionkey"]) == ("d", f"{world.a}/d")
    await eventually(lambda: len(world.sessions) == 0)


@pytest.mark.parametrize("version", VERSIONS)
async def test_takeover_by_the_same_device_and_client_id(world: World, version: int) -> None:
    reader = world.reader(world.a)
    async with paho_client(world.port, f"d@{world.a}", "pw", version=version, client_id="c1") as old:
        assert is_connection(await reader.one(), "d", True)
        # A wrong password with the same client id does not touch the old connection.
        intruder = Paho("c1", version=version, username=f"d@{world.a}", password="bad")
        try:
            assert (await intruder.connect(world.port)).is_failure
        finally:
            await intruder.aclose()
        # The same client id of another device (and another application) leaves it alone too.
        async with paho_client(world.port, f"gw@{world.a}", "gwpw", version=version, client_id="c1") as other, \
                paho_client(world.port, f"d@{world.b}", "pwb", version=version, client_id="c1") as stranger:
            assert is_connection(await reader.one(), "gw", True)
            assert not (await old.publish("t", b"old still here")).is_failure
            assert (await device_event(world)).data == b"old still here"
            async with paho_client(world.port, f"d@{world.a}", "pw", version=version, client_id="c1") as new:
                reason = await old.wait_disconnected()
                if version == V5:
                    assert reason.value == 0x8E
                # Applications see the old session end before the new one starts.
                assert is_connection(await reader.one(), "d", False)
                assert is_connection(await reader.one(), "d", True)
                assert not (await new.publish("t", b"new")).is_failure
                assert (await device_event(world)).data == b"new"
                assert not (await other.publish("t", b"other")).is_failure
                assert not (await stranger.publish("t", b"stranger")).is_failure
                assert (await device_event(world)).data == b"other"
                assert (await device_event(world, world.b)).data == b"stranger"


@pytest.mark.parametrize("version", [ProtocolVersion.V311, ProtocolVersion.V5])
async def test_keep_alive_timeout_ends_the_session_with_an_event(world: World, version: ProtocolVersion) -> None:
    async with await RawClient.open(world.port, version) as client:
        client.send(Connect("quiet", version, keep_alive=1, username=f"d@{world.a}", password=b"pw"))
        assert isinstance(await client.receive(), ConnAck)
        assert is_connection(await world.reader(world.a).one(), "d", True)
        started = time.monotonic()
        packets = await client.until_closed(timeout=5)  # silent: closed after 1.5 keep-alive periods
        assert 1.0 <= time.monotonic() - started < 4
    assert packets == ([Disconnect(Reason.KEEP_ALIVE_TIMEOUT)] if version is ProtocolVersion.V5 else [])
    assert is_connection(await world.reader(world.a).one(), "d", False)


async def test_server_shutdown_ends_sessions_with_0x8b_and_an_event(world: World) -> None:
    async with paho_client(world.port, f"d@{world.a}", "pw") as device:
        assert is_connection(await world.reader(world.a).one(), "d", True)
        await world.listener.aclose()
        assert (await device.wait_disconnected()).value == 0x8B
    assert is_connection(await world.reader(world.a).one(), "d", False)


# --- tenant isolation -----------------------------------------------------------------------------


async def test_a_device_of_one_application_cannot_publish_into_another(world: World) -> None:
    # The same device name exists in both applications; A's password does not open B's device.
    intruder = Paho(username=f"d@{world.b}", password="pw")
    try:
        assert (await intruder.connect(world.port)).value == 0x86
    finally:
        await intruder.aclose()
    async with paho_client(world.port, f"d@{world.a}", "pw") as device:
        for topic in ("telemetry", f"{world.b}/d", f"telemetry/{world.b}"):
            await device.publish(topic, b"from A")
    async with paho_client(world.port, f"d@{world.b}", "pwb") as owner:
        assert not (await owner.publish("sentinel", b"from B")).is_failure
    # B's topic holds B's own connection events and sentinel, nothing of A's device.
    before, sentinel = await world.reader(world.b).until(lambda e: e.attributes["subject"] == "sentinel")
    assert sentinel.data == b"from B"
    assert all(is_connection(e) and e.attributes["application"] == world.b for e in before)


# --- command inboxes -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_subscribe_to_command_inboxes(world: World, version: int) -> None:
    async with paho_client(world.port, f"gw@{world.a}", "gwpw", version=version) as gateway:
        granted = await gateway.subscribe([("command/inbox/#", 1), ("command/inbox//#", 0),
                                           ("command/inbox/th/1/#", 2), ("foo/#", 1), ("command/x", 0)])
        refused = 0x87 if version == V5 else 0x80
        assert [r.value for r in granted] == [1, 0, 1, refused, refused]
        session = next(iter(world.sessions.sessions_of(world.a, "gw")))
        assert world.sessions.filters(session) == {
            InboxFilter(InboxScope.ALL), InboxFilter(InboxScope.SELF), InboxFilter(InboxScope.DEVICE, "th/1")}
        # The seam the command router will call: a command for a device behind the gateway.
        assert world.sessions.deliver(Command(world.a, "th/1", "set", b"on"), gateways=("gw",)) == 1
        message = await asyncio.wait_for(gateway.messages.get(), 10)
        assert (message.topic, message.payload) == ("command/inbox/th/1/set", b"on")
        assert world.sessions.deliver(Command(world.a, "gw", "reboot")) == 1
        message = await asyncio.wait_for(gateway.messages.get(), 10)
        assert (message.topic, message.payload) == ("command/inbox//reboot", b"")
        await gateway.unsubscribe("command/inbox/#")
        await gateway.unsubscribe("command/inbox//#")
        assert world.sessions.filters(session) == {InboxFilter(InboxScope.DEVICE, "th/1")}
        assert world.sessions.deliver(Command(world.a, "gw", "reboot")) == 0
    await eventually(lambda: not world.sessions.sessions_of(world.a, "gw"))


async def test_v5_subscribe_failure_codes_per_filter(world: World) -> None:
    async with await RawClient.open(world.port) as client:
        client.send(Connect("subs", username=f"d@{world.a}", password=b"pw"))
        assert isinstance(await client.receive(), ConnAck)
        filters = ("command/inbox//#", "foo/#", "a/#/b", "a+/b", "$share/g/command/inbox/#", "command/inbox/#")
        client.send(Subscribe(1, tuple(SubscriptionRequest(f, qos=1) for f in filters)))
        assert await client.receive() == SubAck(1, (
            Reason.GRANTED_QOS_1, Reason.NOT_AUTHORIZED, Reason.TOPIC_FILTER_INVALID, Reason.TOPIC_FILTER_INVALID,
            Reason.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, Reason.GRANTED_QOS_1))
        with_id = Subscribe(2, (SubscriptionRequest("command/inbox/d/#"),), Properties(subscription_identifiers=(5,)))
        client.send(with_id)
        assert await client.receive() == SubAck(2, (Reason.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,))
        client.send(Unsubscribe(3, ("command/inbox/#", "foo/#", "command/inbox/#")))
        assert await client.receive() == UnsubAck(3, (
            Reason.SUCCESS, Reason.NO_SUBSCRIPTION_EXISTED, Reason.NO_SUBSCRIPTION_EXISTED))
        session = next(iter(world.sessions.sessions_of(world.a, "d")))
        assert world.sessions.filters(session) == {InboxFilter(InboxScope.SELF)}
        # Still serving: a publish is acknowledged.
        client.send(Publish("t", b"x", qos=1, packet_id=9))
        assert await client.receive() == PubAck(9)


async def test_commands_beyond_the_outbox_are_dropped_not_queued(world: World) -> None:
    async with paho_client(world.port, f"d@{world.a}", "pw") as device:
        await device.subscribe("command/inbox//#")
        taken = [world.sessions.deliver(Command(world.a, "d", f"c{n}", content_type="text/plain")) for n in range(40)]
        assert taken == [1] * OUTBOX + [0] * (40 - OUTBOX)  # handed over at once; the writer runs later
        names = [(await asyncio.wait_for(device.messages.get(), 10)).topic for _ in range(OUTBOX)]
        assert names == [f"command/inbox//c{n}" for n in range(OUTBOX)]
        # Once written, the outbox takes commands again.
        assert world.sessions.deliver(Command(world.a, "d", "again")) == 1
        message = await asyncio.wait_for(device.messages.get(), 10)
        assert message.topic == "command/inbox//again"


@pytest.mark.parametrize("version", VERSIONS)
async def test_publish_over_tls(world: World, tmp_path: Path, version: int) -> None:
    """The same handler behind a TLS listener (8883), as the composition root serves it."""
    context = server_context(TlsSettings(), tmp_path)
    cert, _ = certificate_files(TlsSettings(), tmp_path)
    secure = await start_listener(world.endpoint.handle, "127.0.0.1", 0, limits=world.endpoint.limits,
                                  ssl=context, name="mqtt-endpoint-tls-test")
    try:
        async with paho_client(secure.port, f"d@{world.a}", "pw", version=version, cafile=str(cert)) as device:
            assert not (await device.publish("secure", b"over tls")).is_failure
            event = await device_event(world)
    finally:
        await secure.aclose()
    assert (event.data, event.attributes["subject"]) == (b"over tls", "secure")
