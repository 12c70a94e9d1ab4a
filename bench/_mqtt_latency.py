"""The MQTT side of bench/e2e_latency.py: devices publishing QoS 1 over raw MQTT 3.1.1 connections
(each publish awaits its own PUBACK, and its round trip is recorded), and an application subscribed
through Hawser's MQTT integration (MQTT 5, access token as the user name) that acknowledges every
QoS 1 event and hands its payload to a callback.

Raw asyncio protocols rather than paho: paho's network thread would add its own hop to the latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import _mqtt_wire as wire


class _Device(asyncio.Protocol):
    def __init__(self, connect: bytes) -> None:
        self.connect = connect
        self.frames = wire.Frames()
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[None]] = {}
        self.transport: asyncio.Transport | None = None
        self.next_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.connect)

    def data_received(self, data: bytes) -> None:
        for kind, body in self.frames.feed(data):
            if kind == wire.CONNACK and not self.connack.done():
                self.connack.set_result(wire.connack_code(body))
            elif kind == wire.PUBACK:
                future = self.pending.pop(int.from_bytes(body[:2], "big"), None)
                if future is not None and not future.done():
                    future.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_result(-1)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the server closed the connection"))
        self.pending.clear()

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("not connected")
        while True:  # the next packet id not in flight (3.1.1 ids are 1..65535)
            self.next_id = self.next_id % 65535 + 1
            if self.next_id not in self.pending:
                break
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self.transport.write(wire.publish_qos1(topic, self.next_id, payload))
        return future


class MqttDevices:
    """One connection per (client id, user, password); publish n goes out on connection n % size."""

    def __init__(self, port: int, logins: list[tuple[str, str, str]], topic: str = "telemetry") -> None:
        self.port, self.logins, self.topic = port, logins, topic
        self.devices: list[_Device] = []
        self.failures = 0
        #: Seconds from writing a PUBLISH until its PUBACK, per publish: the device's view.
        self.acks: list[float] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for client_id, username, password in self.logins:
            packet = wire.connect(client_id, username, password, keep_alive=120)
            _, device = await loop.create_connection(lambda p=packet: _Device(p), "127.0.0.1", self.port)  # type: ignore[misc]
            if (code := await asyncio.wait_for(device.connack, 10)) != 0:
                raise RuntimeError(f"MQTT CONNECT of {username} refused: {code}")
            self.devices.append(device)

    async def publish(self, seq: int, body: bytes) -> None:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.devices[seq % len(self.devices)].publish(self.topic, body), 30)
        except (ConnectionError, TimeoutError):
            self.failures += 1
            return
        self.acks.append(time.perf_counter() - started)

    def close(self) -> None:
        for device in self.devices:
            if device.transport is not None:
                device.transport.write(wire.DISCONNECT_PACKET)
                device.transport.close()


class Subscriber(asyncio.Protocol):
    """An MQTT 5 application client: `await subscribe()`, then `on_payload(payload)` per event."""

    def __init__(self, token: str, topic_filter: str, on_payload: Callable[[bytes], None]) -> None:
        self.connect = wire.connect_v5("bench-app-subscriber", token, keep_alive=120)
        self.topic_filter, self.on_payload = topic_filter, on_payload
        self.frames = wire.Frames()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[int] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.connect)

    def data_received(self, data: bytes) -> None:
        acks: list[bytes] = []
        for kind, body in self.frames.feed(data):
            if kind & 0xF0 == wire.PUBLISH:
                qos = (kind >> 1) & 3
                pos = 2 + int.from_bytes(body[:2], "big")
                if qos:
                    acks.append(wire.puback(int.from_bytes(body[pos:pos + 2], "big")))
                    pos += 2
                length, shift = 0, 0  # the property length (a variable byte integer), then the payload
                while True:
                    byte = body[pos]
                    pos += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                self.on_payload(body[pos + length:])
            elif kind == wire.CONNACK and not self.connack.done():
                self.connack.set_result(wire.connack_code(body))
            elif kind == wire.SUBACK and not self.suback.done():
                self.suback.set_result(body[-1])
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_result(-1)

    async def subscribe(self) -> None:
        if (code := await asyncio.wait_for(self.connack, 10)) != 0:
            raise RuntimeError(f"the MQTT integration refused the application's CONNECT: 0x{code & 0xFF:02x}")
        assert self.transport is not None
        self.transport.write(wire.subscribe_v5(1, self.topic_filter, qos=1))
        if (granted := await asyncio.wait_for(self.suback, 10)) not in (0, 1):
            raise RuntimeError(f"subscription to {self.topic_filter} refused: 0x{granted & 0xFF:02x}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.write(wire.DISCONNECT_PACKET)
            self.transport.close()
