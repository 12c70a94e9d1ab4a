"""The CoAP endpoint into a real Kafka: what aiocoap's client publishes lands as Drogue's binary-mode
CloudEvent (key, `ce_` headers, `content-type`, value), read back with a plain aiokafka consumer."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from aiokafka import AIOKafkaConsumer

from hawser.bus.kafka import KafkaBus
from hawser.events import events_topic
from tests.endpoints.coap_server import NON, World, basic, running_endpoint
from tests.helpers import unique_name

pytestmark = pytest.mark.kafka


@contextlib.asynccontextmanager
async def kafka_world(bootstrap: str, tmp_path: Path) -> AsyncIterator[World]:
    bus = KafkaBus(bootstrap, partitions=1, client_id=unique_name("coap-test"))
    await bus.start()
    try:
        async with running_endpoint(bus, tmp_path, read=False) as world:
            yield world
    finally:
        await bus.aclose()


async def read_records(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def test_a_gateway_publish_lands_in_kafka_with_every_drogue_attribute(kafka_bootstrap: str, tmp_path: Path
                                                                            ) -> None:
    async with kafka_world(kafka_bootstrap, tmp_path) as world:
        response = await world.post(
            ["v1", "telemetry", "th1"], b'{"temp":21.5}', content_format=50,
            query=["data_schema=urn%3Aexample%3Atemp&ct=0"], auth=basic(f"gw@{world.a}", "gwpw"),
        )
        assert response.code == Code.CHANGED
        [record] = await read_records(kafka_bootstrap, events_topic(world.a), 1)
    attributes = headers(record)
    assert record.key == f"{world.a}/th1".encode()
    assert record.value == b'{"temp":21.5}'
    assert attributes["content-type"] == "application/json"
    assert attributes["ce_specversion"] == "1.0"
    assert attributes["ce_type"] == "io.drogue.event.v1"
    assert attributes["ce_source"] == f"drogue://{world.a}/th1"
    assert attributes["ce_subject"] == "telemetry"
    assert attributes["ce_dataschema"] == "urn:example:temp"
    assert (attributes["ce_application"], attributes["ce_device"], attributes["ce_sender"]) == (world.a, "th1", "gw")
    assert attributes["ce_deviceuid"] != attributes["ce_senderuid"]
    assert attributes["ce_applicationuid"]
    assert attributes["ce_instance"] == "coap-test"
    assert attributes["ce_partitionkey"] == f"{world.a}/th1"
    assert attributes["ce_id"]
    assert attributes["ce_time"].endswith("Z")


async def test_a_non_confirmable_block_wise_upload_is_one_record(kafka_bootstrap: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 12
    async with kafka_world(kafka_bootstrap, tmp_path) as world:
        response = await world.post(["v1", "firmware-log"], payload, content_format=42, reliability=NON)
        assert response.code == Code.CHANGED
        assert (await world.post(["v1", "marker"], b"marker")).code == Code.CHANGED
        records = await read_records(kafka_bootstrap, events_topic(world.a), 2)
    assert [record.value for record in records] == [payload, b"marker"]
    assert headers(records[0])["content-type"] == "application/octet-stream"
    assert headers(records[0])["ce_device"] == "d"
