"""Real-socket harness for the MQTT device endpoint tests: the endpoint on 127.0.0.1:0 over a
`MemoryDirectory` and a real bus, and readers of the bus. The clients are `tests.paho` (paho-mqtt) and
`tests.mqtt_raw` (Hawser's own codec, for bad input)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from auth.devices import DeviceAuthenticator
from command.sessions import DeviceSessions
from endpoints.ingest import Ingest
from endpoints.mqtt import MqttEndpoint
from hawser.bus.base import EventBus, Subscription
from hawser.config import MqttEndpointSettings
from hawser.events import CloudEvent, events_topic
from hawser.mqtt.stream import MqttListener, start_listener
from tests.auth.fakes import MemoryDirectory, password, user
from tests.helpers import unique_name
from tests.paho import V5, paho_client

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


async def publish_ok(port: int, world: World, *, version: int = V5) -> None:
    """The server still serves: a fresh paho device (`tests.paho.V5` or `V311`) connects, publishes QoS 1
    and its event arrives."""
    marker = unique_name("alive").encode()
    async with paho_client(port, f"d@{world.a}", "pw", version=version) as device:
        reason = await device.publish("alive", marker)
        assert not reason.is_failure, reason
    await world.reader(world.a).until(lambda e: e.data == marker)
