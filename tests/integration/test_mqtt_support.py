"""What the MQTT integration's socket tests share (no tests here): a real integration listener on
127.0.0.1:0 over a real `RegistryStore` (SQLite) with tokens stored in it and a real bus (embedded
log or Kafka), a paho-mqtt client bridged from its thread to asyncio, and a raw client speaking
through Hawser's own codec (to leave PUBLISHes un-acknowledged, or stop reading)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties as PahoProperties
from prometheus_client import REGISTRY

from auth.tokens import AccessTokenAuthenticator
from hawser.access import Role
from hawser.bus import EventBus
from hawser.bus.embedded import EmbeddedBus
from hawser.bus.kafka import KafkaBus
from hawser.config import MqttIntegrationSettings
from hawser.events import EventOrigin, events_topic, new_event, partition_key
from hawser.mqtt.codec import Decoder, encode
from hawser.mqtt.codec import Role as CodecRole
from hawser.mqtt.packets import Connect, Packet, Properties, ProtocolVersion, Subscribe, SubscriptionRequest
from hawser.mqtt.stream import start_listener
from integration.mqtt import MqttIntegration
from registry.documents import ApplicationDocument, Metadata
from registry.store import RegistryStore
from tests.helpers import unique_name
from tests.integration.conftest import _token
from tests.paho import TIMEOUT, V5, Paho, _code

#: Small windows so that the tests reach the bounds quickly.
INFLIGHT = 4
WRITE_BUFFER = 16 * 1024


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def open_subscriptions() -> float:
    return gauge("hawser_mqtt_integration_subscriptions")


def open_connections() -> float:
    return gauge("hawser_mqtt_integration_connections")


@dataclass
class Integration:
    """A running integration: apps `a` (alice admin, carol reader) and `b` (bob admin); tokens
    `alice`, `bob`, `carol`, `root` (superuser), `alice-b` (alice's, scoped to app b)."""

    port: int
    a: str
    b: str
    bus: EventBus
    store: RegistryStore
    tokens: dict[str, str]

    async def publish(self, app: str, device: str, data: bytes = b'{"n": 0}', *, channel: str = "telemetry",
                      content_type: str | None = "application/json") -> str:
        info = await self.store.get_application_info(app)
        uid = info.uid if info else f"uid-{app}"
        origin = EventOrigin(app, uid, device, f"uid-{device}", device, f"uid-{device}")
        event = new_event(origin, channel=channel, data=data, instance="test", content_type=content_type)
        await self.bus.send(events_topic(app), event, key=partition_key(app, device))
        return event.id


@asynccontextmanager
async def running_bus(kind: str, tmp_path: Path, kafka_bootstrap: str | None = None) -> AsyncIterator[EventBus]:
    bus: EventBus
    if kind == "kafka":
        assert kafka_bootstrap is not None
        bus = KafkaBus(kafka_bootstrap, client_id=unique_name("mqtt-int"))
    else:
        bus = EmbeddedBus(tmp_path / "events.db")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.aclose()


@asynccontextmanager
async def serve_integration(tmp_path: Path, bus: EventBus, **settings: Any) -> AsyncIterator[Integration]:
    a, b = unique_name("a"), unique_name("b")
    store = await RegistryStore.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", bus=bus)
    try:
        await store.create_application(ApplicationDocument(metadata=Metadata(name=a)), creator="alice")
        await store.create_application(ApplicationDocument(metadata=Metadata(name=b)), creator="bob")
        await store.set_members(a, {"alice": Role.ADMIN, "carol": Role.READER})
        tokens = {
            "alice": await _token(store, "alice"),
            "bob": await _token(store, "bob"),
            "carol": await _token(store, "carol"),
            "root": await _token(store, "root", superuser=True),
            "alice-b": await _token(store, "alice", scopes=frozenset({b})),
        }
        config = MqttIntegrationSettings(host="127.0.0.1", port=0, inflight=INFLIGHT,
                                         write_buffer_bytes=WRITE_BUFFER, **settings)
        integration = MqttIntegration(bus, store, AccessTokenAuthenticator(store), config)
        listener = await start_listener(integration.handle, "127.0.0.1", 0, limits=integration.limits,
                                        name="mqtt-integration-test")
        try:
            yield Integration(listener.port, a, b, bus, store, tokens)
        finally:
            await listener.aclose(drain_s=5)
    finally:
        await store.aclose()


# --- paho-mqtt ------------------------------------------------------------------------------------


class AppClient(Paho):
    """`tests.paho.Paho` with what applications do besides: UNSUBSCRIBE, SUBSCRIBE with properties."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unsubacks: dict[int, asyncio.Future[list[int]]] = {}
        self.client.on_unsubscribe = self._on_unsubscribe

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        future = self._unsubacks.get(mid)
        if future is not None:
            self._settle(future, [_code(r) for r in reasons])

    async def subscribe_with(self, topic: str, qos: int, properties: PahoProperties) -> list[int]:
        future: asyncio.Future[list[int]] = self.loop.create_future()
        _, mid = self.client.subscribe(topic, qos, properties=properties)
        assert mid is not None
        self._subacks[mid] = future  # paho's thread answers only after the server, in this loop, ran
        return await asyncio.wait_for(future, TIMEOUT)

    async def unsubscribe(self, topic: str) -> list[int]:
        future: asyncio.Future[list[int]] = self.loop.create_future()
        _, mid = self.client.unsubscribe(topic)
        assert mid is not None
        self._unsubacks[mid] = future
        return await asyncio.wait_for(future, TIMEOUT)

    async def connack_properties(self) -> PahoProperties | None:
        _, properties = await asyncio.wait_for(asyncio.shield(self.connected), TIMEOUT)
        return properties


def paho_properties(packet_type: int, **values: Any) -> PahoProperties:
    """paho's MQTT 5 properties of a packet type (`PacketTypes`), with `values` set by paho's names."""
    properties = PahoProperties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def prop(properties: PahoProperties | None, name: str) -> Any:
    """One property by paho's name (they are set dynamically), None when absent."""
    return getattr(properties, name, None)


@asynccontextmanager
async def app_client(port: int, token: str | None, *, version: int = V5, user: str | None = None,
                     client_id: str = "") -> AsyncIterator[AppClient]:
    """A connected client: the token as user name, or `user` with the token as password."""
    client = AppClient(client_id or unique_name("app"), version=version,
                       username=user if user is not None else token, password=token if user is not None else None)
    try:
        assert await client.connect(port) == 0, "CONNECT refused"
        yield client
    finally:
        await client.aclose()


# --- a raw client through Hawser's codec -------------------------------------------------------------


class RawClient:
    """A client written with `hawser.mqtt.codec`: sends what it is told, never acknowledges by
    itself, and can stop reading altogether (a small receive buffer makes that bite early)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: ProtocolVersion) -> None:
        self.reader = reader
        self.writer = writer
        self.version = version
        self.decoder = Decoder(version, role=CodecRole.SERVER)

    @classmethod
    async def connect(cls, port: int, token: str | None, *, version: ProtocolVersion = ProtocolVersion.V5,
                      password: bytes | None = None, receive_buffer: int | None = None,
                      properties: Properties | None = None) -> RawClient:
        """Send a CONNECT (the token as user name, unless None); read the CONNACK with `packet()`."""
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer or 2**16)
        client = cls(reader, writer, version)
        client.send(Connect(unique_name("raw"), version, keep_alive=0, username=token, password=password,
                            properties=properties or Properties()))
        return client

    def send(self, packet: Packet) -> None:
        self.writer.write(encode(packet, self.version))

    def subscribe(self, topic_filter: str, qos: int = 1, packet_id: int = 1) -> None:
        self.send(Subscribe(packet_id, (SubscriptionRequest(topic_filter, qos),), Properties()))

    async def packet(self, timeout: float = 10.0) -> Packet | None:
        """The next packet from the server; None once it closed the connection."""
        async with asyncio.timeout(timeout):
            while (packet := self.decoder.next_packet()) is None:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.decoder.feed(data)
            return packet

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()
