"""Real-socket harness for the MQTT device endpoint tests: the endpoint on 127.0.0.1:0 over a
`MemoryDirectory` and a real bus, readers of the bus, a paho-mqtt device bridged to asyncio, and a raw
client that speaks bytes through our own codec (for bad input)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode

from auth.devices import DeviceAuthenticator
from command.sessions import DeviceSessions
from endpoints.ingest import Ingest
from endpoints.mqtt import MqttEndpoint
from hawser.bus.base import EventBus, Subscription
from hawser.config import MqttEndpointSettings
from hawser.events import CloudEvent, events_topic
from hawser.mqtt.codec import Decoder, Role, encode
from hawser.mqtt.packets import Packet, ProtocolVersion
from hawser.mqtt.stream import MqttListener, start_listener
from tests.auth.fakes import MemoryDirectory, password, user
from tests.helpers import unique_name

TIMEOUT = 10.0


class EventReader:
    """Reads one application's events from the bus, in order, with a deadline."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._events = subscription.__aiter__()

    async def take(self, count: int, timeout: float = TIMEOUT) -> list[CloudEvent]:
        events: list[CloudEvent] = []
        async with asyncio.timeout(timeout):
            while len(events) < count:
                events.append((await anext(self._events)).event)
        return events

    async def one(self, timeout: float = TIMEOUT) -> CloudEvent:
        return (await self.take(1, timeout))[0]

    async def until(self, predicate: Any, timeout: float = TIMEOUT) -> tuple[list[CloudEvent], CloudEvent]:
        """Events up to the first one `predicate` holds for: (those before, that one)."""
        before: list[CloudEvent] = []
        async with asyncio.timeout(timeout):
            while True:
                event = (await anext(self._events)).event
                if predicate(event):
                    return before, event
                before.append(event)


@dataclass
class World:
    """A running endpoint. Application `a`: devices `d` (password `pw`), `gw` (`gwpw`), `th/1` (behind
    `gw`), `other` (behind nobody), `u` (user credential `user1`/`upw`), `dis` (disabled, `pw`).
    Application `b`: `d` (`pwb`)."""

    port: int
    a: str
    b: str
    bus: EventBus
    directory: MemoryDirectory
    sessions: DeviceSessions
    endpoint: MqttEndpoint
    listener: MqttListener
    readers: dict[str, EventReader] = field(default_factory=dict)

    def reader(self, app: str) -> EventReader:
        return self.readers[app]


@contextlib.asynccontextmanager
async def running_endpoint(
    bus: EventBus,
    *,
    max_payload_bytes: int = 4096,
    receive_maximum: int = 16,
    write_buffer_bytes: int = 64 * 1024,
    connect_timeout_s: float = 5.0,
    read_buffer_bytes: int | None = None,
    read: bool = True,
) -> AsyncIterator[World]:
    """The endpoint with fresh applications `a` and `b` (see `World`); with `read`, readers of both
    applications' topics, opened before anything is published."""
    a, b = unique_name("a"), unique_name("b")
    directory = MemoryDirectory()
    for app in (a, b):
        directory.add_app(app)
        await bus.ensure_topic(events_topic(app))
    directory.add_device(a, "d", password("pw"))
    directory.add_device(a, "gw", password("gwpw"))
    directory.add_device(a, "th/1", gateways=("gw",))
    directory.add_device(a, "other")
    directory.add_device(a, "u", user("user1", "upw"))
    directory.add_device(a, "dis", password("pw"), disabled=True)
    directory.add_device(b, "d", password("pwb"))
    authenticator = DeviceAuthenticator(directory, cache_size=100, cache_ttl_s=60.0)
    sessions = DeviceSessions()
    settings = MqttEndpointSettings(
        max_payload_bytes=max_payload_bytes, receive_maximum=receive_maximum,
        write_buffer_bytes=write_buffer_bytes, connect_timeout_s=connect_timeout_s,
    )
    endpoint = MqttEndpoint(Ingest(bus, instance="mqtt-test", max_payload_bytes=max_payload_bytes),
                            authenticator, sessions, settings)
    limits = endpoint.limits
    if read_buffer_bytes is not None:
        limits = dataclasses.replace(limits, read_buffer_bytes=read_buffer_bytes)
    subscriptions = [await bus.subscribe([events_topic(app)]) for app in (a, b)] if read else []
    listener = await start_listener(endpoint.handle, "127.0.0.1", 0, limits=limits, name="mqtt-endpoint-test")
    world = World(listener.port, a, b, bus, directory, sessions, endpoint, listener,
                  {app: EventReader(sub) for app, sub in zip((a, b), subscriptions, strict=False)})
    try:
        yield world
    finally:
        await listener.aclose(drain_s=5.0)
        for subscription in subscriptions:
            await subscription.aclose()
        await authenticator.aclose()


# --- paho-mqtt, bridged to asyncio ---------------------------------------------------------------


class PahoDevice:
    """A paho-mqtt client on its own thread; callbacks resolve futures on the test's loop. No
    automatic reconnect (a device taken over must not come back and take over in turn)."""

    def __init__(
        self, port: int, username: str | None, password: str | None = None, *, version: int = 5,
        client_id: str = "", keepalive: int = 60, clean: bool = True, inflight: int = 16,
        ca_file: str | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.port, self.keepalive, self.version, self.clean = port, keepalive, version, clean
        protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
            clean_session=clean if version != 5 else None, reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=ca_file)
        # paho ignores the server's Receive Maximum (16 in these tests) and would send 20.
        self.client.max_inflight_messages_set(inflight)
        self.connack: asyncio.Future[ReasonCode] = self.loop.create_future()
        self.connack_properties: PahoProperties | None = None
        self.disconnected: asyncio.Future[ReasonCode] = self.loop.create_future()
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._early: dict[int, ReasonCode] = {}
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self.messages: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self._started = False
        client = self.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_subscribe
        client.on_message = self._on_message

    # Callbacks run on paho's thread: hand everything to the loop.
    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, properties: Any) -> None:
        self.connack_properties = properties
        self.loop.call_soon_threadsafe(_resolve, self.connack, reason)

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.messages.put_nowait, message)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.loop.call_soon_threadsafe(_resolve, self.disconnected, reason)

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self.loop.call_soon_threadsafe(self._published, mid, reason)

    def _published(self, mid: int, reason: ReasonCode) -> None:
        future = self._acks.pop(mid, None)
        if future is None:
            self._early[mid] = reason
        else:
            _resolve(future, reason)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: Any, _p: Any) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None:
            self.loop.call_soon_threadsafe(_resolve, future, list(reasons))

    async def connect(self, properties: PahoProperties | None = None) -> ReasonCode:
        """The CONNACK's reason code (raises TimeoutError if none came)."""
        kwargs: dict[str, Any] = {"properties": properties} if self.version == 5 else {}
        if self.version == 5:
            kwargs["clean_start"] = self.clean
        await asyncio.to_thread(self.client.connect, "127.0.0.1", self.port, self.keepalive, **kwargs)
        self.client.loop_start()
        self._started = True
        return await asyncio.wait_for(asyncio.shield(self.connack), TIMEOUT)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, properties: PahoProperties | None = None
    ) -> asyncio.Future[ReasonCode]:
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        future: asyncio.Future[ReasonCode] = self.loop.create_future()
        if info.mid in self._early:
            future.set_result(self._early.pop(info.mid))
        else:
            self._acks[info.mid] = future
        return future

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, properties: PahoProperties | None = None,
        timeout: float = TIMEOUT,
    ) -> ReasonCode:
        """The PUBACK's reason code (for QoS 0: once written)."""
        return await asyncio.wait_for(self.publish_nowait(topic, payload, qos, properties), timeout)

    async def subscribe(self, topic: str | list[tuple[str, int]], qos: int = 1) -> list[ReasonCode]:
        future: asyncio.Future[list[ReasonCode]] = self.loop.create_future()
        _, mid = self.client.subscribe(topic, qos) if isinstance(topic, str) else self.client.subscribe(topic)
        assert mid is not None
        self._subacks[mid] = future
        return await asyncio.wait_for(future, TIMEOUT)

    async def unsubscribe(self, topic: str) -> list[ReasonCode]:
        future: asyncio.Future[list[ReasonCode]] = self.loop.create_future()
        _, mid = self.client.unsubscribe(topic)
        assert mid is not None
        self._subacks[mid] = future
        return await asyncio.wait_for(future, TIMEOUT)

    async def wait_disconnected(self, timeout: float = TIMEOUT) -> ReasonCode:
        return await asyncio.wait_for(asyncio.shield(self.disconnected), timeout)

    async def aclose(self) -> None:
        if self._started:
            self.client.disconnect()
            await asyncio.to_thread(self.client.loop_stop)
            self._started = False

    async def __aenter__(self) -> PahoDevice:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def v5_properties(content_type: str | None = None, user_properties: Sequence[tuple[str, str]] = (),
                  packet: int = PacketTypes.PUBLISH, **values: Any) -> PahoProperties:
    properties = PahoProperties(packet)  # type: ignore[no-untyped-call]
    if content_type is not None:
        properties.ContentType = content_type
    if user_properties:
        properties.UserProperty = list(user_properties)
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


@contextlib.asynccontextmanager
async def paho_device(port: int, username: str | None, password: str | None = None, **kwargs: Any
                      ) -> AsyncIterator[PahoDevice]:
    """A connected paho device (asserts the CONNACK was a success)."""
    device = PahoDevice(port, username, password, **kwargs)
    try:
        reason = await device.connect()
        assert not reason.is_failure, f"CONNECT refused: {reason}"
        yield device
    finally:
        await device.aclose()


async def publish_ok(port: int, world: World, *, version: int = 5) -> None:
    """The server still serves: a fresh device connects, publishes QoS 1 and its event arrives."""
    marker = unique_name("alive").encode()
    async with paho_device(port, f"d@{world.a}", "pw", version=version) as device:
        reason = await device.publish("alive", marker)
        assert not reason.is_failure, reason
    await world.reader(world.a).until(lambda e: e.data == marker)


# --- a raw client over our own codec ----------------------------------------------------------------


class RawClient:
    """Hand-made packets (or bytes) to the endpoint, and what comes back, decoded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: ProtocolVersion) -> None:
        self.reader, self.writer, self.version = reader, writer, version
        self.decoder = Decoder(version, role=Role.SERVER)

    @classmethod
    async def open(cls, port: int, version: ProtocolVersion = ProtocolVersion.V5) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, version)

    def send(self, *packets: Packet) -> None:
        for packet in packets:
            self.writer.write(encode(packet, self.version))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def receive(self, timeout: float = TIMEOUT) -> Packet | None:
        """The next packet from the server; None once it closed the connection."""
        async with asyncio.timeout(timeout):
            while True:
                packet = self.decoder.next_packet()
                if packet is not None:
                    return packet
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.decoder.feed(data)

    async def until_closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Every packet the server sends until it closes the connection (fails if it does not)."""
        packets: list[Packet] = []
        while (packet := await self.receive(timeout)) is not None:
            packets.append(packet)
        return packets

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
