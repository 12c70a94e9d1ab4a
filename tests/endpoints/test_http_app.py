"""The HTTP endpoint app with an in-memory directory and a recording bus: bus down, bugs, the
body cap against an endless stream, readiness."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.types import Message

from auth.devices import DeviceAuthenticator
from endpoints.http import HttpEndpoint, build_app
from endpoints.ingest import Ingest
from hawser.config import HttpEndpointSettings
from registry.values import ApplicationInfo
from tests.auth.fakes import MemoryDirectory, password
from tests.endpoints.fakes import RecordingBus
from tests.endpoints.server import serve

LIMIT = 100
AUTH = {"Authorization": "Basic " + base64.b64encode(b"dev1@app1:pw1").decode()}


class BrokenDirectory(MemoryDirectory):
    async def get_application_info(self, application: str) -> ApplicationInfo | None:
        raise RuntimeError("database exploded: secret-internal-detail")


@dataclass
class Parts:
    app: HttpEndpoint
    bus: RecordingBus
    url: str


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    directory = MemoryDirectory()
    directory.add_app("app1")
    directory.add_device("app1", "dev1", password("pw1"))
    bus = RecordingBus()
    authenticator = DeviceAuthenticator(directory, cache_size=10, cache_ttl_s=60.0)
    app = build_app(Ingest(bus, instance="i", max_payload_bytes=LIMIT), authenticator,
                    HttpEndpointSettings(max_payload_bytes=LIMIT))
    async with serve(app) as url:
        yield Parts(app, bus, url)


async def test_bus_unavailable_answers_503_with_retry_after(parts: Parts) -> None:
    async with httpx.AsyncClient(base_url=parts.url) as client:
        parts.bus.down = True
        response = await client.post("/v1/c", content=b"x", headers=AUTH)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.json()["type"].endswith("/bus-unavailable")
        parts.bus.down = False
        assert (await client.post("/v1/c", content=b"y", headers=AUTH)).status_code == 202
    assert [event.data for _, event, _ in parts.bus.sent] == [b"y"]


async def test_a_bug_answers_a_generic_500_and_logs_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    authenticator = DeviceAuthenticator(BrokenDirectory(), cache_size=10, cache_ttl_s=60.0)
    app = build_app(Ingest(RecordingBus(), instance="i", max_payload_bytes=LIMIT), authenticator,
                    HttpEndpointSettings(max_payload_bytes=LIMIT))
    with caplog.at_level(logging.ERROR, logger="endpoints.http"):
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/v1/c", content=b"x", headers=AUTH)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret-internal-detail" not in response.text
    assert "Traceback" not in response.text
    records = [r for r in caplog.records if r.name == "endpoints.http"]
    assert records
    assert records[0].exc_info is not None
    assert "database exploded" in str(records[0].exc_info[1])


async def test_body_reading_stops_at_the_limit_of_an_endless_stream(parts: Parts) -> None:
    """Raw ASGI: the client would send forever; the app must stop pulling soon after the limit."""
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"z" * 10, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/c", "raw_path": b"/v1/c", "root_path": "", "query_string": b"",
        "headers": [(b"authorization", AUTH["Authorization"].encode()), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
    }
    await parts.app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert pulled == LIMIT // 10 + 1
    assert parts.bus.sent == []


async def test_readiness_follows_the_flag(parts: Parts) -> None:
    async with httpx.AsyncClient(base_url=parts.url) as client:
        assert (await client.get("/health/ready")).status_code == 200
        parts.app.state.ready = False
        response = await client.get("/health/ready")
        assert response.status_code == 503
        assert (await client.get("/health/live")).status_code == 200
