"""The HTTP device endpoint over real sockets: uvicorn on 127.0.0.1:0, the SQLite registry, the
embedded durable log. Every publish parameter is checked on the event read back from the bus."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth.devices import DeviceAuthenticator
from endpoints.http import HttpEndpoint, build_app
from endpoints.ingest import Ingest
from hawser import passwords
from hawser.bus.base import Subscription
from hawser.bus.embedded import EmbeddedBus
from hawser.config import HttpEndpointSettings
from hawser.events import CloudEvent
from registry.documents import ApplicationDocument, DeviceDocument
from registry.store import RegistryStore
from tests.endpoints.server import serve

LIMIT = 1024


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def device_doc(app: str, name: str, *credentials: dict[str, Any], **spec: Any) -> DeviceDocument:
    return DeviceDocument.model_validate({
        "metadata": {"name": name, "application": app},
        "spec": {"authentication": {"credentials": list(credentials)}, **spec},
    })


@dataclass
class Stack:
    client: httpx.AsyncClient
    store: RegistryStore
    authenticator: DeviceAuthenticator
    events: Subscription
    app: HttpEndpoint

    async def next_event(self) -> CloudEvent:
        delivery = await asyncio.wait_for(anext(aiter(self.events)), 10)
        return delivery.event

    async def nothing_published(self) -> None:
        """Publishes a marker: the next event must be it, so nothing else reached the bus."""
        response = await self.client.post("/v1/marker", content=b"marker", headers=basic("dev1@app1", "pw1"))
        assert response.status_code == 202
        event = await self.next_event()
        assert (event.attributes["subject"], event.data) == ("marker", b"marker")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=1024, parallelism=1))
    async with EmbeddedBus(tmp_path / "events.db") as bus:
        store = await RegistryStore.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", bus=bus)
        try:
            for name in ("app1", "app2"):
                await store.create_application(ApplicationDocument.model_validate({"metadata": {"name": name}}))
            for doc in (
                device_doc("app1", "dev1", {"pass": "pw1"}, alias=["dev1-alias"]),
                device_doc("app1", "dev@x", {"pass": "atpw"}),
                device_doc("app1", "sensor", {"user": {"username": "alice", "password": "alicepw", "unique": True}}),
                device_doc("app1", "a-dev", {"user": {"username": "shared", "password": "pwA", "unique": False}}),
                device_doc("app1", "b-dev", {"user": {"username": "shared", "password": "pwB", "unique": False}}),
                device_doc("app1", "gw", {"pass": "gwpw"}),
                device_doc("app1", "behind", gatewaySelector={"matchNames": ["gw"]}),
                device_doc("app1", "off", {"pass": "offpw"}, core={"disabled": True}),
                device_doc("app2", "dev2", {"pass": "pw2"}),
            ):
                await store.create_device(doc.metadata.application or "", doc)
            authenticator = DeviceAuthenticator(store, cache_size=100, cache_ttl_s=60.0)
            ingest = Ingest(bus, instance="test-instance", max_payload_bytes=LIMIT)
            app = build_app(ingest, authenticator, HttpEndpointSettings(max_payload_bytes=LIMIT))
            async with (
                await bus.subscribe(["events-app1"]) as events,
                serve(app) as url,
                httpx.AsyncClient(base_url=url) as client,
            ):
                yield Stack(client, store, authenticator, events, app)
            await authenticator.aclose()
        finally:
            await store.aclose()
            passwords.configure(passwords.KdfCost())


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + code)
    assert "Traceback" not in response.text


async def test_publish_puts_a_complete_event_on_the_bus(stack: Stack) -> None:
    response = await stack.client.post(
        "/v1/temperature", params={"data_schema": "urn:example:temp", "ct": "30"},
        content=b'{"temp": 21.5}', headers={**basic("dev1@app1", "pw1"), "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    assert response.content == b""
    event = await stack.next_event()
    attrs = event.attributes
    assert attrs["specversion"] == "1.0"
    assert attrs["type"] == "io.drogue.event.v1"
    assert attrs["source"] == "drogue://app1/dev1"
    assert attrs["subject"] == "temperature"
    assert attrs["datacontenttype"] == "application/json"
    assert attrs["dataschema"] == "urn:example:temp"
    assert (attrs["application"], attrs["device"], attrs["sender"]) == ("app1", "dev1", "dev1")
    assert attrs["deviceuid"] == attrs["senderuid"] != ""
    assert attrs["applicationuid"] != ""
    assert attrs["partitionkey"] == "app1/dev1"
    assert attrs["instance"] == "test-instance"
    assert event.data == b'{"temp": 21.5}'


@pytest.mark.parametrize(
    ("path", "params"), [("/v1/state/behind", {}), ("/v1/state", {"as": "behind"})]
)
async def test_gateway_publishes_for_another_device(stack: Stack, path: str, params: dict[str, str]) -> None:
    response = await stack.client.post(path, params=params, content=b"on", headers=basic("gw@app1", "gwpw"))
    assert response.status_code == 202
    attrs = (await stack.next_event()).attributes
    assert (attrs["device"], attrs["sender"]) == ("behind", "gw")
    assert attrs["source"] == "drogue://app1/behind"
    assert attrs["partitionkey"] == "app1/behind"
    assert attrs["deviceuid"] != attrs["senderuid"]
    assert "datacontenttype" not in attrs


async def test_username_credential_and_application_parameter(stack: Stack) -> None:
    assert (await stack.client.post("/v1/c", content=b"1", headers=basic("alice@app1", "alicepw"))).status_code == 202
    assert (await stack.next_event()).attributes["device"] == "sensor"
    response = await stack.client.post("/v1/c", params={"application": "app1"}, content=b"2",
                                       headers=basic("dev1", "pw1"))
    assert response.status_code == 202
    assert (await stack.next_event()).data == b"2"


@pytest.mark.parametrize(
    "headers",
    [
        basic("dev1@app1", "wrong"),
        basic("nobody@app1", "pw1"),
        basic("dev1@nowhere", "pw1"),
        basic("dev2@app1", "pw2"),  # a device of another application
        {"Authorization": "Basic %%%not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"dev1@app1").decode()},  # no colon
        {"Authorization": "Basic " + base64.b64encode(b"dev1:pw1").decode()},  # no '@'
        {"Authorization": "Bearer abc"},
        {},
    ],
)
async def test_refused_credentials_answer_401(stack: Stack, headers: dict[str, str]) -> None:
    response = await stack.client.post("/v1/c", content=b"x", headers=headers)
    assert_problem(response, 401, "missing-credentials" if not headers else "bad-credentials")
    assert response.headers["www-authenticate"] == 'Basic realm="hawser"'
    await stack.nothing_published()


async def test_disabled_device_and_application_answer_403(stack: Stack) -> None:
    assert_problem(await stack.client.post("/v1/c", content=b"x", headers=basic("off@app1", "offpw")),
                   403, "device-disabled")
    app = await stack.store.get_application("app1")
    disabled = ApplicationDocument.model_validate(
        {**app.model_dump(by_alias=True), "spec": {"core": {"disabled": True}}})
    await stack.store.update_application(disabled)
    assert_problem(await stack.client.post("/v1/c", content=b"x", headers=basic("dev1@app1", "pw1")),
                   403, "application-disabled")
    enabled = await stack.store.get_application("app1")
    await stack.store.update_application(
        ApplicationDocument.model_validate({**enabled.model_dump(by_alias=True), "spec": {}}))
    await stack.nothing_published()


async def test_gateway_not_allowed_answers_403(stack: Stack) -> None:
    for path in ("/v1/c/gw", "/v1/c/ghost"):
        response = await stack.client.post(path, content=b"x", headers=basic("dev1@app1", "pw1"))
        assert_problem(response, 403, "gateway-not-allowed")
    response = await stack.client.post(
        "/v1/c/dev1", params={"as": "gw"}, content=b"x", headers=basic("gw@app1", "gwpw"))
    assert_problem(response, 400, "bad-request")
    await stack.nothing_published()


@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.x+json; charset=utf-8"])
async def test_bad_json_answers_406(stack: Stack, content_type: str) -> None:
    response = await stack.client.post(
        "/v1/c", content=b'{"a": ', headers={**basic("dev1@app1", "pw1"), "Content-Type": content_type}
    )
    assert_problem(response, 406, "bad-json")
    await stack.nothing_published()


async def test_oversized_body_answers_413(stack: Stack) -> None:
    headers = basic("dev1@app1", "pw1")
    exact = await stack.client.post("/v1/c", content=b"x" * LIMIT, headers=headers)
    assert exact.status_code == 202
    assert len((await stack.next_event()).data) == LIMIT
    declared = await stack.client.post("/v1/c", content=b"x" * (LIMIT + 1), headers=headers)
    assert_problem(declared, 413, "payload-too-large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer encoding
        for _ in range(8):
            yield b"y" * 256

    chunked = await stack.client.post("/v1/c", content=chunks(), headers=headers)
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert_problem(chunked, 413, "payload-too-large")
    # The connection survives the refusal: the next request on it is served.
    assert (await stack.client.post("/v1/c", content=b"ok", headers=headers)).status_code == 202
    assert (await stack.next_event()).data == b"ok"
    await stack.nothing_published()


async def test_oversized_chunked_body_with_the_h11_server(stack: Stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 256

    async with serve(stack.app, http="h11") as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/v1/c", content=chunks(), headers=basic("dev1@app1", "pw1"))
        assert_problem(response, 413, "payload-too-large")
        assert (await client.post("/v1/c", content=b"ok", headers=basic("dev1@app1", "pw1"))).status_code == 202
    assert (await stack.next_event()).data == b"ok"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/tele%20metry", {}),
        ("/v1/a%00b", {}),
        ("/v1/a%0Ab", {}),
        ("/v1/c/dev%091", {}),
        ("/v1/c", {"as": "a b"}),
        ("/v1/" + "x" * 300, {}),
    ],
)
async def test_invalid_names_answer_400(stack: Stack, path: str, params: dict[str, str]) -> None:
    response = await stack.client.post(path, params=params, content=b"x", headers=basic("dev1@app1", "pw1"))
    assert_problem(response, 400, "invalid-name")


@pytest.mark.parametrize(
    ("user", "password", "params", "device"),
    [
        ("dev1-alias@app1", "pw1", {}, "dev1"),  # log in by alias
        ("dev%40x@app1", "atpw", {}, "dev@x"),  # the device part is percent-decoded, as Drogue
        ("dev@x@app1", "atpw", {}, "dev@x"),  # split on the last '@'
        ("shared@app1", "pwB", {"device": "b-dev"}, "b-dev"),  # Drogue's UsernamePassword + device
        ("shared", "pwA", {"application": "app1", "device": "a-dev"}, "a-dev"),
    ],
)
async def test_drogue_login_forms(
    stack: Stack, user: str, password: str, params: dict[str, str], device: str
) -> None:
    response = await stack.client.post("/v1/c", params=params, content=b"x", headers=basic(user, password))
    assert response.status_code == 202, response.text
    assert (await stack.next_event()).attributes["device"] == device


@pytest.mark.parametrize(
    ("user", "params"),
    [("shared@app1", {}), ("shared@app1", {"device": "a-dev"}), ("d\x00@app1", {}), ("dev1@ap\x00p1", {}),
     ("dev1%00@app1", {}), ("dev1@app1", {"device": "a\x00"}), ("d" * 300 + "@app1", {})],
)
async def test_refused_login_forms_answer_401(stack: Stack, user: str, params: dict[str, str]) -> None:
    response = await stack.client.post("/v1/c", params=params, content=b"x", headers=basic(user, "pwB"))
    assert_problem(response, 401, "bad-credentials")
    await stack.nothing_published()


@pytest.mark.parametrize("payload", [b"NaN", b"[Infinity]", b"-Infinity", b"[" * LIMIT, b"[1e400]"])
async def test_json_that_serde_refuses_answers_406(stack: Stack, payload: bytes) -> None:
    headers = {**basic("dev1@app1", "pw1"), "content-type": "application/json"}
    assert_problem(await stack.client.post("/v1/c", content=payload, headers=headers), 406, "bad-json")
    await stack.nothing_published()


async def test_invalid_command_timeout_answers_400(stack: Stack) -> None:
    response = await stack.client.post("/v1/c", params={"ct": "soon"}, content=b"x",
                                       headers=basic("dev1@app1", "pw1"))
    assert_problem(response, 400, "bad-request")


async def test_second_publish_runs_no_kdf(stack: Stack) -> None:
    headers = basic("dev1@app1", "pw1")
    for _ in range(3):
        assert (await stack.client.post("/v1/c", content=b"x", headers=headers)).status_code == 202
    assert stack.authenticator.kdf_runs == 1


async def test_password_change_takes_effect_at_once(stack: Stack) -> None:
    old, new = basic("dev1@app1", "pw1"), basic("dev1@app1", "pw1-new")
    assert (await stack.client.post("/v1/c", content=b"1", headers=old)).status_code == 202
    current = await stack.store.get_device("app1", "dev1")
    changed = device_doc("app1", "dev1", {"pass": "pw1-new"})
    changed.metadata.resource_version = current.metadata.resource_version
    await stack.store.update_device("app1", changed)
    assert_problem(await stack.client.post("/v1/c", content=b"2", headers=old), 401, "bad-credentials")
    assert (await stack.client.post("/v1/c", content=b"3", headers=new)).status_code == 202
    assert [(await stack.next_event()).data for _ in range(2)] == [b"1", b"3"]


async def test_health_and_unknown_routes(stack: Stack) -> None:
    assert (await stack.client.get("/health/live")).json() == {"status": "ok"}
    assert (await stack.client.get("/health/ready")).status_code == 200
    assert (await stack.client.get("/metrics")).status_code == 200
    missing = await stack.client.post("/v2/c", content=b"x")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await stack.client.get("/v1/c")).status_code == 405
    body = json.loads((await stack.client.get("/v1/c")).content)
    assert body["status"] == 405
