"""TTN webhooks over real sockets: the HTTP endpoint under uvicorn on 127.0.0.1:0, the SQLite registry,
the embedded durable log (and once real Kafka). Each fixture is replayed with httpx and its event read
back from the bus."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from auth.devices import DeviceAuthenticator
from endpoints.http import HttpEndpoint, build_app
from endpoints.ingest import Ingest
from hawser import passwords
from hawser.bus.base import EventBus, Subscription
from hawser.bus.embedded import EmbeddedBus
from hawser.bus.kafka import KafkaBus
from hawser.config import HttpEndpointSettings
from hawser.events import CloudEvent
from registry.documents import ApplicationDocument, DeviceDocument
from registry.store import RegistryStore
from registry.values import DeviceDirectory, DeviceInfo
from tests.auth.fakes import MemoryDirectory, password
from tests.endpoints.server import serve
from tests.endpoints.ttn_fixtures import DEVICE, for_device, load, varied

LIMIT = 8192
UP = "uplink_message"


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


GATEWAY = basic("ttn-gw@app1", "gwpw")
BEHIND = {"gatewaySelector": {"matchNames": ["ttn-gw"]}}


@dataclass
class Stack:
    client: httpx.AsyncClient
    events: Subscription
    authenticator: DeviceAuthenticator
    app: HttpEndpoint

    async def next_event(self) -> CloudEvent:
        delivery = await asyncio.wait_for(anext(aiter(self.events)), 10)
        return delivery.event

    async def webhook(self, path: str, body: bytes, headers: Mapping[str, str] = GATEWAY,
                      params: Mapping[str, str] | None = None) -> httpx.Response:
        return await self.client.post(path, content=body, params=params,
                                      headers={**headers, "Content-Type": "application/json"})

    async def nothing_published(self) -> None:
        """A marker through `/v1`: the next event must be it, so nothing else reached the bus."""
        response = await self.client.post("/v1/marker", content=b"marker", headers=GATEWAY)
        assert response.status_code == 202
        event = await self.next_event()
        assert (event.attributes["subject"], event.data) == ("marker", b"marker")


def device(name: str, *credentials: dict[str, Any], **spec: Any) -> DeviceDocument:
    return DeviceDocument.model_validate({
        "metadata": {"name": name, "application": "app1"},
        "spec": {"authentication": {"credentials": list(credentials)}, **spec},
    })


@asynccontextmanager
async def running(directory: DeviceDirectory, bus: EventBus) -> AsyncIterator[Stack]:
    authenticator = DeviceAuthenticator(directory, cache_size=100, cache_ttl_s=60.0)
    app = build_app(Ingest(bus, instance="ttn-test", max_payload_bytes=LIMIT), authenticator,
                    HttpEndpointSettings(max_payload_bytes=LIMIT))
    try:
        async with (
            await bus.subscribe(["events-app1"]) as events,
            serve(app) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            yield Stack(client, events, authenticator, app)
    finally:
        await authenticator.aclose()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=1024, parallelism=1))
    async with EmbeddedBus(tmp_path / "events.db") as bus:
        store = await RegistryStore.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", bus=bus)
        try:
            await store.create_application(ApplicationDocument.model_validate({"metadata": {"name": "app1"}}))
            for doc in (
                device("ttn-gw", {"pass": "gwpw"}),
                device("other-gw", {"pass": "otherpw"}),
                device("raw-dev", ttn={"payload": "raw"}, **BEHIND),
                device("fields-dev", ttn={"payload": "fields"}, **BEHIND),
                device("full-dev", ttn={"payload": "full"}, **BEHIND),
                device("plain-dev", **BEHIND),
                device("station", alias=[DEVICE], ttn={"payload": "raw"}, **BEHIND),
                device("lonely", ttn={"payload": "raw"}),
                device("off-dev", core={"disabled": True}, **BEHIND),
            ):
                await store.create_device("app1", doc)
            async with running(store, bus) as ready:
                yield ready
        finally:
            await store.aclose()
            passwords.configure(passwords.KdfCost())


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["type"].rsplit("/", 1)[-1]) == (status, code)
    assert "Traceback" not in response.text


def assert_origin(event: CloudEvent, device_name: str) -> None:
    attrs = event.attributes
    assert (attrs["type"], attrs["application"], attrs["device"], attrs["sender"]) == (
        "io.drogue.event.v1", "app1", device_name, "ttn-gw")
    assert attrs["source"] == f"drogue://app1/{device_name}"
    assert attrs["partitionkey"] == f"app1/{device_name}"
    assert attrs["deviceuid"] != attrs["senderuid"]
    assert attrs["instance"] == "ttn-test"


V3_UPLINK_EXTENSIONS = {
    "hwaddr": "260B1A2F", "lorawandeveui": "70B3D57ED0051234", "lorawanport": "2", "lorawanfcnt": "1287",
    "lorawangateway": "gw-roof", "lorawanrssi": "-101", "lorawansnr": "9.5",
}


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("raw-dev", bytes([0x01, 0x09, 0x2F, 0x01, 0x2A, 0x0C, 0xE4]), "application/octet-stream"),
        ("fields-dev", b'{"temperature":23.51,"humidity":42,"battery":3.3,"status":"ok"}', "application/json"),
        ("full-dev", None, "application/json"),
        ("plain-dev", None, "application/json"),  # no spec.ttn.payload: the whole document, as Drogue
    ],
)
async def test_v3_uplink_by_payload_mode(stack: Stack, name: str, data: bytes | None, content_type: str) -> None:
    body = for_device(load("v3_uplink"), name)
    response = await stack.webhook("/ttn/v3", body)
    assert response.status_code == 202, response.text
    assert response.content == b""
    event = await stack.next_event()
    assert_origin(event, name)
    attrs = event.attributes
    assert (attrs["subject"], attrs["datacontenttype"]) == ("2", content_type)
    assert attrs["time"] == "2024-05-06T10:21:33.987654321Z"
    assert "dataschema" not in attrs
    assert {key: attrs.get(key) for key in V3_UPLINK_EXTENSIONS} == V3_UPLINK_EXTENSIONS
    assert event.data == (body if data is None else data)


@pytest.mark.parametrize(("name", "data"), [("fields-dev", b"null"), ("raw-dev", b"\x02\x00\xff")])
async def test_v3_uplink_without_decoded_payload(stack: Stack, name: str, data: bytes) -> None:
    response = await stack.webhook("/ttn/v3", for_device(load("v3_uplink_undecoded"), name))
    assert response.status_code == 202, response.text
    event = await stack.next_event()
    assert (event.attributes["subject"], event.data) == ("10", data)
    assert event.attributes["time"] == "2024-05-06T10:31:35.301Z"
    assert event.attributes["lorawanfcnt"] == "0"


@pytest.mark.parametrize(
    ("fixture", "kind", "time"),
    [
        ("v3_join_accept", "join_accept", "2024-05-06T10:02:11.448022617Z"),
        ("v3_downlink_ack", "downlink_ack", "2024-05-06T10:42:01.302118954Z"),
        ("v3_location_solved", "location_solved", "2024-05-06T10:51:12.007Z"),
    ],
)
async def test_v3_other_messages_go_whole_on_their_own_channel(
    stack: Stack, fixture: str, kind: str, time: str
) -> None:
    body = for_device(load(fixture), "raw-dev")  # even for a `raw` device: the document, as JSON
    response = await stack.webhook("/ttn/v3", body, params={"data_schema": "urn:uplinks-only"})
    assert response.status_code == 202, response.text
    event = await stack.next_event()
    assert_origin(event, "raw-dev")
    attrs = event.attributes
    assert (attrs["subject"], attrs["datacontenttype"], attrs["time"]) == (kind, "application/json", time)
    assert (attrs["hwaddr"], attrs["lorawandeveui"]) == ("260B1A2F", "70B3D57ED0051234")
    assert "dataschema" not in attrs
    assert "lorawanport" not in attrs
    assert event.data == body


@pytest.mark.parametrize("path", ["/ttn/v2", "/ttn/"])
async def test_v2_uplink(stack: Stack, path: str) -> None:
    response = await stack.webhook(path, for_device(load("v2_uplink"), "fields-dev"))
    assert response.status_code == 202, response.text
    event = await stack.next_event()
    assert_origin(event, "fields-dev")
    attrs = event.attributes
    assert (attrs["subject"], attrs["time"]) == ("3", "2019-03-14T08:26:53.531748351Z")
    assert (attrs["lorawanport"], attrs["lorawanretry"], attrs["hwaddr"]) == ("3", "true", "70B3D57ED0051234")
    assert (attrs["lorawanfcnt"], attrs["lorawangateway"], attrs["lorawanrssi"], attrs["lorawansnr"]) == (
        "412", "eui-b827ebfffe6c1a2b", "-58", "9.25")
    assert event.data == b'{"light":1027,"motion":true}'


async def test_end_device_by_alias_and_gateway_by_application_parameter(stack: Stack) -> None:
    response = await stack.webhook("/ttn/v3", load("v3_uplink"), headers=basic("ttn-gw", "gwpw"),
                                   params={"application": "app1", "data_schema": "urn:weather:v1"})
    assert response.status_code == 202, response.text
    event = await stack.next_event()
    assert_origin(event, "station")
    assert event.attributes["dataschema"] == "urn:weather:v1"
    assert event.data == bytes([0x01, 0x09, 0x2F, 0x01, 0x2A, 0x0C, 0xE4])


@pytest.mark.parametrize(
    "headers", [basic("ttn-gw@app1", "wrong"), basic("nobody@app1", "gwpw"), basic("ttn-gw@app2", "gwpw"), {}]
)
async def test_wrong_credentials_answer_401(stack: Stack, headers: dict[str, str]) -> None:
    response = await stack.webhook("/ttn/v3", for_device(load("v3_uplink"), "raw-dev"), headers=headers)
    assert_problem(response, 401, "bad-credentials" if headers else "missing-credentials")
    assert response.headers["www-authenticate"] == 'Basic realm="hawser"'
    await stack.nothing_published()


@pytest.mark.parametrize("headers", [basic("ttn-gw@app1", "wrong"), {}])
async def test_a_strangers_body_is_never_read(stack: Stack, headers: dict[str, str]) -> None:
    """The gateway is authenticated before the body is read: not JSON, or too large as it streams
    in, a stranger still gets 401 (never 406 or 413, which would mean Hawser read it)."""
    code = "bad-credentials" if headers else "missing-credentials"
    assert_problem(await stack.webhook("/ttn/v3", b"<html>", headers=headers), 401, code)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length
        yield b"x" * LIMIT
        yield b"x" * LIMIT

    assert_problem(await stack.client.post("/ttn/v3", content=chunks(), headers=headers), 401, code)
    await stack.nothing_published()


async def test_a_declared_oversized_body_is_refused_before_it_is_sent(stack: Stack) -> None:
    """Content-Length over the limit: 413 at once, while the body has not been sent at all (a
    server that waited for it would never answer)."""
    host, port = str(stack.client.base_url.host), stack.client.base_url.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"POST /ttn/v3 HTTP/1.1\r\nHost: hawser\r\nAuthorization: {GATEWAY['Authorization']}\r\n"
                     f"Content-Length: {LIMIT + 1}\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"413", status_line
    await stack.nothing_published()


async def test_the_consoles_simulated_uplink(stack: Stack) -> None:
    """What TTN's console *Simulate uplink* sends: no NS reception time, a `test` gateway, f_cnt 0."""
    body = for_device(load("v3_uplink_simulated"), "raw-dev")
    response = await stack.webhook("/ttn/v3", body)
    assert response.status_code == 202, response.text
    event = await stack.next_event()
    attrs = event.attributes
    assert (attrs["subject"], attrs["time"], event.data) == ("1", "2024-05-06T11:04:27.318296187Z", b"\x01\x02\x03")
    assert (attrs["lorawangateway"], attrs["lorawanrssi"], attrs["lorawansnr"], attrs["lorawanfcnt"]) == (
        "test", "42", "4.2", "0")
    assert "hwaddr" not in attrs  # a simulated uplink names no device address


@pytest.mark.parametrize(
    ("headers", "end_device", "code"),
    [
        (GATEWAY, "lonely", "gateway-not-allowed"),  # exists, but does not list the gateway
        (GATEWAY, "ghost", "gateway-not-allowed"),  # unknown: must exist, answered alike
        (basic("other-gw@app1", "otherpw"), "raw-dev", "gateway-not-allowed"),
        (GATEWAY, "off-dev", "device-disabled"),
    ],
)
async def test_end_devices_the_gateway_may_not_publish_for_answer_403(
    stack: Stack, headers: dict[str, str], end_device: str, code: str
) -> None:
    for fixture in ("v3_uplink", "v3_join_accept"):
        response = await stack.webhook("/ttn/v3", for_device(load(fixture), end_device), headers=headers)
        assert_problem(response, 403, code)
    await stack.nothing_published()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/ttn/v3", b"", 406, "bad-json"),
        ("/ttn/v3", b"<html>", 406, "bad-json"),
        ("/ttn/v3", for_device(load("v3_uplink"), "raw-dev")[:200], 406, "bad-json"),  # truncated
        ("/ttn/v3", b"[" * 5000, 406, "bad-json"),
        ("/ttn/v2", b'{"dev_id": "raw-dev", "port": NaN}', 406, "bad-json"),
        ("/ttn/v3", b"[]", 400, "bad-request"),
        ("/ttn/v3", varied("v3_uplink", (("end_device_ids",), None)), 400, "bad-request"),
        ("/ttn/v3", varied("v3_uplink", ((UP, "f_port"), 256)), 400, "bad-request"),
        ("/ttn/v3", varied("v3_uplink", ((UP, "frm_payload"), "%%")), 400, "bad-request"),
        ("/ttn/v3", varied("v3_uplink", (("received_at",), "today")), 400, "bad-request"),
        ("/ttn/v3", varied("v3_uplink", (("end_device_ids", "device_id"), "raw dev")), 400, "invalid-name"),
        ("/ttn/v3", varied("v3_uplink", (("end_device_ids", "device_id"), "\ud800")), 406, "bad-json"),
        ("/ttn/v3", for_device(varied("v3_uplink", ((UP, "decoded_payload"), {"s": "\ud800"})), "fields-dev"), 406,
         "bad-json"),
        ("/ttn/v3", for_device(varied("v3_uplink", ((UP, "decoded_payload"), {"s": "\udc00"})), "full-dev"), 406,
         "bad-json"),
        ("/ttn/v3", for_device(load("v3_uplink"), "raw-dev")[:-2] + b', "end_device_ids": {"device_id": "fields-dev"}}',
         406, "bad-json"),
        ("/ttn/v3", load("v2_uplink"), 400, "bad-request"),  # a v2 document on the v3 hook
        ("/ttn/v2", for_device(load("v3_uplink"), "raw-dev"), 400, "bad-request"),
    ],
)
async def test_malformed_documents_publish_nothing(
    stack: Stack, path: str, body: bytes, status: int, code: str
) -> None:
    assert_problem(await stack.webhook(path, body), status, code)
    await stack.nothing_published()


async def test_oversized_documents_answer_413(stack: Stack) -> None:
    padded = varied("v3_uplink", ((UP, "decoded_payload"), {"pad": "x" * LIMIT}))
    assert_problem(await stack.webhook("/ttn/v3", padded), 413, "payload-too-large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused as it streams in
        yield padded[: LIMIT // 2]
        yield padded[LIMIT // 2 :]

    assert_problem(await stack.client.post("/ttn/v3", content=chunks(), headers=GATEWAY), 413, "payload-too-large")
    await stack.nothing_published()


async def test_methods_and_paths(stack: Stack) -> None:
    for path in ("/ttn/v3", "/ttn/v2", "/ttn/"):
        response = await stack.client.get(path, headers=GATEWAY)
        assert_problem(response, 405, "about:blank")  # as the publish route answers 405
        assert response.headers["allow"] == "POST"
    for path in ("/ttn/v4", "/ttn/v3/uplink", "/ttn"):
        assert (await stack.webhook(path, load("v3_uplink"))).status_code == 404
    await stack.nothing_published()


async def test_repeated_webhooks_verify_the_password_once(stack: Stack) -> None:
    for _ in range(3):
        assert (await stack.webhook("/ttn/v3", for_device(load("v3_uplink"), "raw-dev"))).status_code == 202
    assert stack.authenticator.kdf_runs == 1
    for _ in range(3):
        await stack.next_event()


async def test_port_data_schema_from_the_device_spec(tmp_path: Path) -> None:
    directory = MemoryDirectory()
    directory.add_app("app1")
    directory.add_device("app1", "ttn-gw", password("gwpw"))
    directory.devices[("app1", "mapped")] = DeviceInfo(
        "app1", "mapped", "uid-mapped", gateways=("ttn-gw",), ttn={"payload": "raw"},
        lorawan={"ports": {"2": {"data_schema": "urn:port-2"}, "10": {"data_schema": "urn:port-10"}}},
    )
    async with EmbeddedBus(tmp_path / "events.db") as bus:
        await bus.ensure_topic("events-app1")
        async with running(directory, bus) as stack:
            for fixture, schema in (("v3_uplink", "urn:port-2"), ("v3_uplink_undecoded", "urn:port-10")):
                response = await stack.webhook("/ttn/v3", for_device(load(fixture), "mapped"))
                assert response.status_code == 202, response.text
                assert (await stack.next_event()).attributes["dataschema"] == schema
            # The query wins over the port mapping, as in Drogue.
            response = await stack.webhook("/ttn/v3", for_device(load("v3_uplink"), "mapped"),
                                           params={"data_schema": "urn:query"})
            assert response.status_code == 202
            assert (await stack.next_event()).attributes["dataschema"] == "urn:query"


@pytest.mark.kafka
async def test_v3_uplink_lands_in_kafka(kafka_bootstrap: str) -> None:
    app_name = f"ttn-{uuid.uuid4().hex[:8]}"
    directory = MemoryDirectory()
    directory.add_app(app_name)
    directory.add_device(app_name, "ttn-gw", password("gwpw"))
    directory.add_device(app_name, DEVICE, gateways=("ttn-gw",))
    directory.update_device(app_name, DEVICE, ttn={"payload": "fields"})
    bus = KafkaBus(kafka_bootstrap, partitions=1)
    await bus.start()
    consumer = AIOKafkaConsumer(f"events-{app_name}", bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        await bus.ensure_topic(f"events-{app_name}")
        authenticator = DeviceAuthenticator(directory, cache_size=10, cache_ttl_s=60.0)
        app = build_app(Ingest(bus, instance="kafka-ttn", max_payload_bytes=LIMIT), authenticator,
                        HttpEndpointSettings(max_payload_bytes=LIMIT))
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/ttn/v3", content=load("v3_uplink"),
                                         headers={**basic(f"ttn-gw@{app_name}", "gwpw"),
                                                  "Content-Type": "application/json"})
        await authenticator.aclose()
        assert response.status_code == 202, response.text
        await consumer.start()
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
        await bus.aclose()
    headers = {name: value.decode() for name, value in record.headers}
    assert record.key == f"{app_name}/{DEVICE}".encode()
    assert json.loads(record.value) == {"temperature": 23.51, "humidity": 42, "battery": 3.3, "status": "ok"}
    assert headers["content-type"] == "application/json"
    assert (headers["ce_subject"], headers["ce_time"]) == ("2", "2024-05-06T10:21:33.987654321Z")
    assert (headers["ce_device"], headers["ce_sender"]) == (DEVICE, "ttn-gw")
    assert {name: headers[f"ce_{name}"] for name in V3_UPLINK_EXTENSIONS} == V3_UPLINK_EXTENSIONS
