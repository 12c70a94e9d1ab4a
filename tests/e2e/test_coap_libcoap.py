"""CoAP end to end with libcoap's own client (`coap-client-notls`, Debian's libcoap3-bin, installed by
scripts/provision.sh): a device publishes through the composition root's CoAP endpoint, with its
credentials in option 4209 as Drogue's devices send them, and the CloudEvent is read back from the
application's topic on the real Kafka bus. A missing client fails the tests: it is part of the setup."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from hawser.server import Gateway
from tests.e2e.conftest import Admin, GatewayFactory, basic
from tests.e2e.test_mqtt_spine import run

CLIENT = "coap-client-notls"
AUTH_OPTION = 4209
URI_QUERY_OPTION = 15

pytestmark = pytest.mark.kafka


def coap_client() -> str:
    path = shutil.which(CLIENT)
    if path is None:
        pytest.fail(f"libcoap's client `{CLIENT}` is not installed: run scripts/provision.sh (it installs "
                    "Debian's libcoap3-bin)")
    return path


async def post(gateway: Gateway, authorization: str, payload: str, query: str = "?ct=0",
               *options: str) -> str:
    """One confirmable POST to /v1/telemetry as JSON (`-t json`: content format 50) with option 4209;
    returns what the client printed. `-v 7` makes it print every message's header, the reply's too."""
    assert gateway.coap_port
    code, out = await run(
        coap_client(), "-v", "7", "-B", "10", "-m", "post", "-O", f"{AUTH_OPTION},{authorization}", *options,
        "-t", "json", "-e", payload, f"coap://127.0.0.1:{gateway.coap_port}/v1/telemetry{query}",
    )
    assert code == 0, out
    return out


async def read_all(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of `topic`, from its beginning to its end offsets as they are now (the caller
    got its 2.04s, so Kafka holds whatever the gateway published before them)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        records: list[Any] = []

        async def fetch() -> None:
            assert time.monotonic() < deadline, f"{topic} not read to its end within {timeout}s"
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)

        while not consumer.assignment():  # without a group: every partition, once the metadata is in
            await fetch()
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            await fetch()
        return records
    finally:
        await consumer.stop()


def changed(out: str) -> bool:
    """Whether the client got a 2.04: piggybacked on the ACK, or separately in a CON when the gateway
    took longer than aiocoap's empty-ACK delay (a device's first request verifies its password)."""
    return re.search(r"^v:1 t:(ACK|CON) c:2\.04 ", out, re.MULTILINE) is not None


def attributes(record: Any) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


async def setup(gateway: Gateway, app: str) -> None:
    assert gateway.bootstrap_token
    admin = Admin(gateway, gateway.bootstrap_token)
    try:
        await admin.create_app(app)
        await admin.create_device(app, "dev", "dev-pass")
    finally:
        await admin.aclose()


async def test_libcoap_client_publishes_a_cloudevent_to_kafka(
    gateway_factory: GatewayFactory, kafka_bootstrap: str
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    async with gateway_factory(bootstrap=kafka_bootstrap) as gateway:
        await setup(gateway, app)
        out = await post(gateway, basic(f"dev@{app}", "dev-pass"), '{"temp":21}')
        assert changed(out), out
        records = await read_all(kafka_bootstrap, f"events-{app}")

    assert len(records) == 1
    event = attributes(records[0])
    assert records[0].key == f"{app}/dev".encode()
    assert json.loads(records[0].value) == {"temp": 21}
    assert event["ce_type"] == "io.drogue.event.v1"
    assert event["ce_subject"] == "telemetry"
    assert event["content-type"] == "application/json"
    assert event["ce_source"] == f"drogue://{app}/dev"
    assert event["ce_application"] == app
    assert event["ce_device"] == event["ce_sender"] == "dev"
    assert event["ce_instance"] == "test-instance"
    assert "ce_dataschema" not in event


async def test_a_wrong_password_gets_4_01_and_publishes_nothing(
    gateway_factory: GatewayFactory, kafka_bootstrap: str
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    async with gateway_factory(bootstrap=kafka_bootstrap) as gateway:
        await setup(gateway, app)
        refused = await post(gateway, basic(f"dev@{app}", "not-the-password"), '{"temp":666}')
        assert re.search(r"^v:1 t:(ACK|CON) c:4\.01 ", refused, re.MULTILINE), refused
        assert re.search(r"^4\.01 \S", refused, re.MULTILINE), refused  # and its diagnostic payload
        assert not changed(refused), refused
        # A good publish after it: once it is acknowledged, the topic holds everything published.
        accepted = await post(gateway, basic(f"dev@{app}", "dev-pass"), '{"temp":22}')
        assert changed(accepted), accepted
        records = await read_all(kafka_bootstrap, f"events-{app}")

    assert [json.loads(r.value) for r in records] == [{"temp": 22}]


async def test_query_parameters_packed_in_one_option_or_split_reach_the_event(
    gateway_factory: GatewayFactory, kafka_bootstrap: str
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    credentials = basic(f"dev@{app}", "dev-pass")
    async with gateway_factory(bootstrap=kafka_bootstrap) as gateway:
        await setup(gateway, app)
        # Packed, as Drogue's clients send them: one Uri-Query option holding `ct=0&data_schema=urn:x`
        # (libcoap splits a URI's query at `&`, so the option is given by number).
        packed = await post(gateway, credentials, '{"n":1}', "", "-O", f"{URI_QUERY_OPTION},ct=0&data_schema=urn:x")
        assert "Uri-Query:ct=0&data_schema=urn:x" in packed, packed
        assert changed(packed), packed
        # Split: libcoap sends the URI's query as one Uri-Query option per parameter.
        split = await post(gateway, credentials, '{"n":2}', "?ct=0&data_schema=urn:y")
        assert "Uri-Query:ct=0, Uri-Query:data_schema=urn:y" in split, split
        assert changed(split), split
        records = await read_all(kafka_bootstrap, f"events-{app}")

    schemas = {json.loads(r.value)["n"]: attributes(r).get("ce_dataschema") for r in records}
    assert schemas == {1: "urn:x", 2: "urn:y"}
    assert {attributes(r)["ce_subject"] for r in records} == {"telemetry"}
