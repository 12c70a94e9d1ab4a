"""The registry API over a real uvicorn socket on 127.0.0.1, with the real embedded event bus:
creating an application creates its topic, deleting it deletes the topic, and a bus that cannot
take the topic leaves no application behind."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from auth.tokens import AccessTokenAuthenticator, ensure_bootstrap_token
from hawser.bus.embedded import EmbeddedBus
from hawser.problems import API_STATUS, exception_handlers
from registry.api import routes
from registry.store import RegistryStore

R = "/api/registry/v1alpha1"


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[EmbeddedBus]:
    async with EmbeddedBus(tmp_path / "events.db") as opened:
        yield opened


@pytest.fixture
async def served(db_url: str, bus: EmbeddedBus) -> AsyncIterator[tuple[str, str, RegistryStore]]:
    store = await RegistryStore.open(db_url, bus=bus)
    token = await ensure_bootstrap_token(store)
    assert token
    app = Starlette(routes=routes(store, AccessTokenAuthenticator(store)),
                    exception_handlers=exception_handlers(API_STATUS))  # type: ignore[arg-type]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", token, store
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
        await store.aclose()


async def test_topics_follow_applications(served: tuple[str, str, RegistryStore], bus: EmbeddedBus) -> None:
    base, token, _ = served
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        reply = await client.post(f"{R}/apps", json={"metadata": {"name": "sock-app"}})
        assert reply.status_code == 201
        assert bus.partitions("events-sock-app") == 3
        reply = await client.post(f"{R}/apps/sock-app/devices", json={
            "metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": "very-secret"}]}}})
        assert reply.status_code == 201
        assert "very-secret" not in reply.text
        assert (await client.get(f"{R}/apps/sock-app/devices/d")).json()["metadata"]["application"] == "sock-app"
        assert (await client.delete(f"{R}/apps/sock-app")).status_code == 204
        assert bus.partitions("events-sock-app") == 0
        reply = await client.get(f"{R}/apps/sock-app/devices/d")
        assert reply.status_code == 404
        assert reply.headers["content-type"] == "application/problem+json"
        reply = await client.get(f"{R}/apps", headers={"Authorization": "Bearer wrong"})
        assert reply.status_code == 401
        assert reply.json()["status"] == 401


async def test_bus_failure_leaves_no_application(served: tuple[str, str, RegistryStore], bus: EmbeddedBus) -> None:
    base, token, store = served
    await bus.aclose()  # the bus now refuses every operation with BusUnavailable
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        reply = await client.post(f"{R}/apps", json={"metadata": {"name": "lost"}})
        assert reply.status_code == 503
        assert reply.headers["retry-after"]
        assert (await client.get(f"{R}/apps/lost")).status_code == 404
    assert await store.get_application_info("lost") is None
