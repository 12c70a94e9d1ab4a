"""HTTP publish through the real Kafka bus, read back with a plain aiokafka consumer: the record's
key, `ce_` headers, `content-type` header and value are what Drogue's consumers expect."""

from __future__ import annotations

import asyncio
import base64
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from auth.devices import DeviceAuthenticator
from endpoints.http import build_app
from endpoints.ingest import Ingest
from hawser.bus.kafka import KafkaBus
from hawser.config import HttpEndpointSettings
from tests.auth.fakes import MemoryDirectory, password
from tests.endpoints.server import serve


@pytest.mark.kafka
async def test_http_publish_lands_in_kafka(kafka_bootstrap: str) -> None:
    app_name = f"app-{uuid.uuid4().hex[:8]}"
    directory = MemoryDirectory()
    directory.add_app(app_name)
    directory.add_device(app_name, "gw", password("gwpw"))
    directory.add_device(app_name, "th/1", gateways=("gw",))
    bus = KafkaBus(kafka_bootstrap, partitions=1)
    await bus.start()
    consumer = AIOKafkaConsumer(f"events-{app_name}", bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        await bus.ensure_topic(f"events-{app_name}")
        authenticator = DeviceAuthenticator(directory, cache_size=10, cache_ttl_s=60.0)
        app = build_app(Ingest(bus, instance="kafka-test", max_payload_bytes=1024), authenticator,
                        HttpEndpointSettings(max_payload_bytes=1024))
        auth = "Basic " + base64.b64encode(f"gw@{app_name}:gwpw".encode()).decode()
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/v1/telemetry/th%2F1", params={"data_schema": "urn:t"}, content=b'{"t":1}',
                headers={"Authorization": auth, "Content-Type": "application/json"},
            )
        assert response.status_code == 202
        await consumer.start()
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
        await bus.aclose()
    headers = {name: value.decode() for name, value in record.headers}
    assert record.key == f"{app_name}/th%2F1".encode()
    assert record.value == b'{"t":1}'
    assert headers["content-type"] == "application/json"
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "io.drogue.event.v1"
    assert headers["ce_source"] == f"drogue://{app_name}/th%2F1"
    assert headers["ce_subject"] == "telemetry"
    assert headers["ce_dataschema"] == "urn:t"
    assert (headers["ce_application"], headers["ce_device"], headers["ce_sender"]) == (app_name, "th/1", "gw")
    assert headers["ce_partitionkey"] == f"{app_name}/th%2F1"
    assert headers["ce_instance"] == "kafka-test"
