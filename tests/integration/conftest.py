"""A real API server for the WebSocket integration: uvicorn on 127.0.0.1:0 serving `routes()` over a
real `RegistryStore` (SQLite) and a real `EmbeddedBus`, with access tokens stored in the registry."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from auth.tokens import AccessTokenAuthenticator
from hawser.access import Role
from hawser.bus import EventBus
from hawser.bus.embedded import EmbeddedBus
from hawser.bus.kafka import KafkaBus
from hawser.events import EventOrigin, events_topic, new_event, partition_key
from hawser.problems import API_STATUS, exception_handlers
from integration.websocket import routes
from registry.documents import ApplicationDocument, Metadata
from registry.store import RegistryStore
from registry.tokens import TokenRecord, hash_token, new_token
from tests.helpers import eventually, unique_name

BUFFER = 4


async def publish_event(store: RegistryStore, bus: EventBus, app: str, device: str, data: bytes = b'{"n": 0}', *,
                        channel: str = "telemetry", content_type: str | None = "application/json") -> str:
    """Send a device event of `app` straight to the bus (with the app's real uid: the integrations
    check it); returns its id."""
    info = await store.get_application_info(app)
    origin = EventOrigin(app, info.uid if info else f"uid-{app}", device, f"uid-{device}", device, f"uid-{device}")
    event = new_event(origin, channel=channel, data=data, instance="test", content_type=content_type)
    await bus.send(events_topic(app), event, key=partition_key(app, device))
    return event.id


@dataclass(frozen=True)
class Tenants:
    """Apps `a` (alice admin, carol reader) and `b` (bob admin); tokens `alice`, `bob`, `carol`,
    `root` (superuser), `alice-b` (alice's, scoped to app b)."""

    a: str
    b: str
    tokens: dict[str, str]


async def seed_tenants(store: RegistryStore) -> Tenants:
    a, b = unique_name("a"), unique_name("b")
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
    return Tenants(a, b, tokens)


@asynccontextmanager
async def running_bus(kind: str, tmp_path: Path, kafka_bootstrap: str | None = None) -> AsyncIterator[EventBus]:
    """A started bus: the embedded log under `tmp_path`, or Kafka."""
    bus: EventBus
    if kind == "kafka":
        assert kafka_bootstrap is not None
        bus = KafkaBus(kafka_bootstrap, client_id=unique_name("integration-test"))
    else:
        bus = EmbeddedBus(tmp_path / "events.db")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.aclose()


def open_sockets() -> float:
    return REGISTRY.get_sample_value("hawser_websocket_sockets") or 0.0


@dataclass
class Api:
    url: str
    a: str
    b: str
    bus: EventBus
    store: RegistryStore
    tokens: dict[str, str]

    def events_url(self, app: str, query: str = "") -> str:
        return f"{self.url}/api/integration/v1/apps/{app}/events" + (f"?{query}" if query else "")

    async def publish(self, app: str, device: str, data: bytes = b'{"n": 0}', channel: str = "telemetry") -> str:
        return await publish_event(self.store, self.bus, app, device, data, channel=channel)


async def _token(store: RegistryStore, user: str, *, superuser: bool = False,
                 scopes: frozenset[str] | None = None) -> str:
    token, token_id = new_token()
    await store.add_token(TokenRecord(id=token_id, hash=hash_token(token), user=user,
                                      created=datetime.now(UTC), superuser=superuser, scopes=scopes))
    return token


async def _serve(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    config = uvicorn.Config(app, ws="websockets-sansio", lifespan="off", log_config=None,
                            access_log=False, ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started or task.done(), message="uvicorn to start")
    assert server.started, "uvicorn did not start"
    port: int = sock.getsockname()[1]
    return server, task, port


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventBus]:
    """Each WebSocket test runs on the embedded log and on Kafka."""
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    async with running_bus(request.param, tmp_path, bootstrap) as real:
        yield real


@pytest.fixture
async def api(tmp_path: Path, bus: EventBus) -> AsyncIterator[Api]:
    """Fresh apps `a` (alice admin, carol reader) and `b` (bob admin); tokens: `alice`, `bob`,
    `carol`, `root` (superuser), `alice-b` (alice's token scoped to app b)."""
    store = await RegistryStore.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", bus=bus)
    try:
        tenants = await seed_tenants(store)
        app = Starlette(routes=routes(bus, store, AccessTokenAuthenticator(store), buffer=BUFFER),
                        exception_handlers=exception_handlers(API_STATUS))  # type: ignore[arg-type]
        server, task, port = await _serve(app)
        try:
            yield Api(f"ws://127.0.0.1:{port}", tenants.a, tenants.b, bus, store, tenants.tokens)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)
    finally:
        await store.aclose()
