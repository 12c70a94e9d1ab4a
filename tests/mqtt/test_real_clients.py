"""The codec against real MQTT implementations before any transport exists: a tiny asyncio server on
127.0.0.1:0 drives `ServerConnection`, and paho-mqtt (3.1.1 and 5) and amqtt's client talk to it.
What the state machine decoded must equal what the clients were told to send, and the clients must
understand our replies (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP, a QoS 1 PUBLISH to them)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import pytest
from amqtt.client import MQTTClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from hawser.mqtt import (
    Connect,
    Disconnect,
    Packet,
    PingReq,
    Properties,
    ProtocolError,
    ProtocolVersion,
    PubAck,
    Publish,
    Reason,
    ServerConnection,
    State,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
    Will,
)
from tests.paho import paho_properties

V311, V5 = ProtocolVersion.V311, ProtocolVersion.V5
TIMEOUT = 10.0
COMMAND = Publish("command/inbox//set-rate", b'{"rate": 5}', 1, packet_id=1,
                  properties=Properties(content_type="application/json", user_properties=(("origin", "test"),)))


@dataclass
class Recorder:
    """Every packet `ServerConnection` returned, in order, and the protocol errors it raised."""

    packets: list[Packet] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)
    pinged: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def replies(self, conn: ServerConnection, packet: Packet) -> Iterator[bytes]:
        if isinstance(packet, Connect):
            yield conn.accept()
        elif isinstance(packet, Publish) and packet.packet_id is not None:
            yield conn.send(PubAck(packet.packet_id))
        elif isinstance(packet, Subscribe):
            yield conn.send(SubAck(packet.packet_id, tuple(Reason(s.qos) for s in packet.subscriptions)))
            properties = COMMAND.properties if conn.version is V5 else Properties()
            yield conn.send(Publish(COMMAND.topic, COMMAND.payload, 1, packet_id=conn.next_packet_id(),
                                    properties=properties))
        elif isinstance(packet, Unsubscribe):
            yield conn.send(UnsubAck(packet.packet_id, (Reason.SUCCESS,) * len(packet.topic_filters)))
        elif isinstance(packet, PingReq):
            self.pinged.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(receive_maximum=10)
        try:
            while conn.state is not State.CLOSED:
                data = await reader.read(65536)
                conn.receive_data(data)
                try:
                    while (packet := conn.next_packet()) is not None:
                        self.packets.append(packet)
                        for reply in self.replies(conn, packet):
                            writer.write(reply)
                except ProtocolError as error:
                    self.errors.append(error)
                    writer.write(conn.error_reply(error))
                    break
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.ended.set()


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[Recorder, int]]:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    try:
        yield recorder, server.sockets[0].getsockname()[1]
        await asyncio.wait_for(recorder.ended.wait(), TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()


def run_paho(port: int, version: ProtocolVersion, pinged: threading.Event) -> list[paho.MQTTMessage]:
    """The client's whole session, blocking (run in a thread): paho runs its own network thread."""
    v5 = version is V5
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{version.name}",
                         protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    connected, subscribed, unsubscribed = threading.Event(), threading.Event(), threading.Event()
    got: list[paho.MQTTMessage] = []
    received = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.on_unsubscribe = lambda c, u, mid, rcs, p: unsubscribed.set()

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        got.append(message)
        received.set()

    client.on_message = on_message
    client.username_pw_set("device-1@app-1", "s3cret")
    will_props = paho_properties(PacketTypes.WILLMESSAGE, WillDelayInterval=5, ContentType="text/plain") if v5 else None
    client.will_set("status/device-1", b"gone", qos=1, properties=will_props)
    try:
        if v5:
            props = paho_properties(PacketTypes.CONNECT, ReceiveMaximum=20, MaximumPacketSize=65536,
                                    UserProperty=[("firmware", "1.2")])
            client.connect("127.0.0.1", port, keepalive=1, clean_start=True, properties=props)
        else:
            client.connect("127.0.0.1", port, keepalive=1)
        client.loop_start()
        assert connected.wait(TIMEOUT)
        if v5:
            options = SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=1)
            client.subscribe("command/inbox/#", options=options)
        else:
            client.subscribe("command/inbox/#", qos=1)
        assert subscribed.wait(TIMEOUT)
        assert received.wait(TIMEOUT)
        publish_props = paho_properties(
            PacketTypes.PUBLISH, ContentType="application/json", PayloadFormatIndicator=1, MessageExpiryInterval=60,
            ResponseTopic="reply/here", CorrelationData=b"\x01\x02", UserProperty=[("a", "1"), ("a", "2")],
        ) if v5 else None
        client.publish("telemetry", b'{"temp": 21}', qos=0, properties=publish_props)
        client.publish("telemetry/device-2", b"\x00\xff", qos=1).wait_for_publish(TIMEOUT)
        if v5:
            client.publish("long/topic/for/alias", b"1", qos=1,
                           properties=paho_properties(PacketTypes.PUBLISH, TopicAlias=3)).wait_for_publish(TIMEOUT)
            client.publish("", b"2", qos=1,
                           properties=paho_properties(PacketTypes.PUBLISH, TopicAlias=3)).wait_for_publish(TIMEOUT)
        assert pinged.wait(TIMEOUT)  # keep-alive 1 s: paho pings on its own
        client.unsubscribe("command/inbox/#")
        assert unsubscribed.wait(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
    return got


@pytest.mark.parametrize("version", [V311, V5])
async def test_paho(version: ProtocolVersion) -> None:
    v5 = version is V5
    pinged = threading.Event()
    async with serving() as (recorder, port):
        relay = asyncio.create_task(recorder.pinged.wait())
        relay.add_done_callback(lambda _: pinged.set())
        try:
            messages = await asyncio.to_thread(run_paho, port, version, pinged)
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
    assert recorder.errors == []

    def props(**values: Any) -> Properties:
        return Properties(**values) if v5 else Properties()

    will = Will("status/device-1", b"gone", 1, False,
                props(will_delay_interval=5, content_type="text/plain"))
    expected_connect = Connect(f"paho-{version.name}", version, 1, True, "device-1@app-1", b"s3cret", will,
                               props(receive_maximum=20, maximum_packet_size=65536,
                                     user_properties=(("firmware", "1.2"),)))
    got = [p for p in recorder.packets if not isinstance(p, PingReq)]
    assert got[0] == expected_connect
    subscription = (SubscriptionRequest("command/inbox/#", 1, False, True, 1) if v5
                    else SubscriptionRequest("command/inbox/#", 1))
    assert isinstance(got[1], Subscribe)
    assert got[1].subscriptions == (subscription,)
    assert got[2] == PubAck(1)  # paho acknowledged our QoS 1 command
    publishes = [p for p in got if isinstance(p, Publish)]
    assert publishes[0] == Publish("telemetry", b'{"temp": 21}', 0, properties=props(
        content_type="application/json", payload_format_indicator=1, message_expiry_interval=60,
        response_topic="reply/here", correlation_data=b"\x01\x02", user_properties=(("a", "1"), ("a", "2"))))
    assert (publishes[1].topic, publishes[1].payload, publishes[1].qos) == ("telemetry/device-2", b"\x00\xff", 1)
    if v5:  # the alias was resolved: the second one arrived with an empty topic
        assert [(p.topic, p.payload, p.properties) for p in publishes[2:]] == [
            ("long/topic/for/alias", b"1", Properties()), ("long/topic/for/alias", b"2", Properties())]
    assert isinstance(got[-2], Unsubscribe)
    assert got[-1] == Disconnect()
    assert any(isinstance(p, PingReq) for p in recorder.packets)
    [message] = messages
    assert (message.topic, message.payload, message.qos) == (COMMAND.topic, COMMAND.payload, 1)
    if v5:
        assert message.properties is not None
        assert getattr(message.properties, "ContentType", None) == "application/json"
        assert getattr(message.properties, "UserProperty", None) == [("origin", "test")]


async def test_amqtt_client() -> None:
    async with serving() as (recorder, port):
        client = MQTTClient(client_id="amqtt-1", config={"auto_reconnect": False, "keep_alive": 30})
        await client.connect(f"mqtt://device-1%40app-1:pw@127.0.0.1:{port}/")
        try:
            await client.publish("telemetry", b"hello", qos=1)
            await client.publish("telemetry", b"q0", qos=0)
            await client.subscribe([("command/inbox/#", 1)])
            message = await client.deliver_message(timeout_duration=TIMEOUT)
            assert message is not None
            assert (message.topic, bytes(message.data or b"")) == (COMMAND.topic, COMMAND.payload)
            await client.ping()
            await asyncio.wait_for(recorder.pinged.wait(), TIMEOUT)
            await client.unsubscribe(["command/inbox/#"])
        finally:
            await client.disconnect()
    assert recorder.errors == []
    connect = recorder.packets[0]
    assert isinstance(connect, Connect)
    assert (connect.client_id, connect.protocol_version, connect.username, connect.password) == (
        "amqtt-1", V311, "device-1@app-1", b"pw")
    kinds = [type(p).__name__ for p in recorder.packets]
    assert kinds == ["Connect", "Publish", "Publish", "Subscribe", "PubAck", "PingReq", "Unsubscribe", "Disconnect"]
    assert recorder.packets[1] == Publish("telemetry", b"hello", 1, packet_id=recorder.packets[1].packet_id)  # type: ignore[union-attr]
    assert recorder.packets[2] == Publish("telemetry", b"q0")
