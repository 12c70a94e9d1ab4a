"""What the MQTT integration's socket tests share (no tests here): a real integration listener on
127.0.0.1:0 over a real `RegistryStore` (SQLite) with tokens stored in it and a real bus (embedded
log or Kafka), and applications' paho clients (`tests.paho`) connected with a token. The raw client
(to leave PUBLISHes un-acknowledged, or stop reading) is `tests.mqtt_raw`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from auth.tokens import AccessTokenAuthenticator
from hawser.bus import EventBus
from hawser.config import MqttIntegrationSettings
from hawser.mqtt.stream import start_listener
from integration.mqtt import MqttIntegration
from registry.store import RegistryStore
from tests.helpers import unique_name
from tests.integration.conftest import publish_event, seed_tenants
from tests.paho import V5, Paho, paho_client

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
        return await publish_event(self.store, self.bus, app, device, data, channel=channel,
                                   content_type=content_type)


@asynccontextmanager
async def serve_integration(tmp_path: Path, bus: EventBus, **settings: Any) -> AsyncIterator[Integration]:
    store = await RegistryStore.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", bus=bus)
    try:
        tenants = await seed_tenants(store)
        config = MqttIntegrationSettings(host="127.0.0.1", port=0, inflight=INFLIGHT,
                                         write_buffer_bytes=WRITE_BUFFER, **settings)
        integration = MqttIntegration(bus, store, AccessTokenAuthenticator(store), config)
        listener = await start_listener(integration.handle, "127.0.0.1", 0, limits=integration.limits,
                                        name="mqtt-integration-test")
        try:
            yield Integration(listener.port, tenants.a, tenants.b, bus, store, tenants.tokens)
        finally:
            await listener.aclose(drain_s=5)
    finally:
        await store.aclose()


def app_client(port: int, token: str | None, *, version: int = V5, user: str | None = None,
               client_id: str = "") -> AbstractAsyncContextManager[Paho]:
    """A connected paho client: the token as user name, or `user` with the token as password."""
    return paho_client(port, user if user is not None else token, token if user is not None else None,
                       client_id=client_id or unique_name("app"), version=version)
