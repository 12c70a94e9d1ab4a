"""The MQTT device endpoint into a real Kafka: every client (paho-mqtt 3.1.1 and 5, amqtt, Debian's
mosquitto_pub) lands its messages as Drogue's binary-mode CloudEvents, read back with a plain aiokafka
consumer; and with Kafka stopped mid-stream, nothing is acknowledged that the topic does not hold."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from amqtt.client import MQTTClient
from prometheus_client import REGISTRY

from hawser.bus.kafka import KafkaBus
from tests.endpoints.mqtt_server import World, running_endpoint
from tests.helpers import eventually, unique_name
from tests.paho import V5, V311, paho_client, paho_properties

pytestmark = pytest.mark.kafka


@contextlib.asynccontextmanager
async def kafka_world(bootstrap: str, send_timeout_s: float = 10.0) -> AsyncIterator[World]:
    bus = KafkaBus(bootstrap, partitions=1, client_id=unique_name("mqtt-test"), send_timeout_s=send_timeout_s)
    await bus.start()
    try:
        async with running_endpoint(bus, read=False) as world:
            yield world
    finally:
        await bus.aclose()


async def read_events(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 30.0
                      ) -> list[Any]:
    """Device events (not connection events) of `topic` from its beginning, until `done(records)`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while not done(records) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(r for r in batch if dict(r.headers)["ce_type"] == b"io.drogue.event.v1")
    finally:
        await consumer.stop()
    return records


def headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def publish_with_paho(world: World, version: int, qos: int, payload: bytes) -> None:
    properties = None
    if version == V5:
        properties = paho_properties(ContentType="application/json", UserProperty=[("trace", "t-1")])
    async with paho_client(world.port, f"d@{world.a}", "pw", version=version) as device:
        assert not (await device.publish("telemetry", payload, qos=qos, properties=properties)).is_failure


async def publish_with_amqtt(world: World, payload: bytes) -> None:
    client = MQTTClient(client_id="amqtt-1", config={"auto_reconnect": False})
    await client.connect(f"mqtt://d%40{world.a}:pw@127.0.0.1:{world.port}/")
    try:
        await client.publish("telemetry", payload, qos=1)
    finally:
        await client.disconnect()


async def publish_with_mosquitto(world: World, version: str, payload: bytes) -> None:
    binary = shutil.which("mosquitto_pub")
    assert binary, "mosquitto_pub is installed by the test setup (Debian's mosquitto-clients)"
    extra = ["-D", "publish", "content-type", "application/json", "-D", "publish", "user-property", "trace", "t-1"]
    process = await asyncio.create_subprocess_exec(
        binary, "-h", "127.0.0.1", "-p", str(world.port), "-V", version, "-q", "1", "-i", "mosq-1",
        "-u", f"d@{world.a}", "-P", "pw", "-t", "telemetry", "-m", payload.decode(),
        *(extra if version == "mqttv5" else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, (out, err)


CLIENTS = ["paho-v311-qos0", "paho-v311-qos1", "paho-v5-qos0", "paho-v5-qos1", "amqtt-qos1",
           "mosquitto-v311-qos1", "mosquitto-v5-qos1"]


@pytest.mark.parametrize("client", CLIENTS)
async def test_client_publish_lands_in_kafka(kafka_bootstrap: str, client: str) -> None:
    payload = json.dumps({"client": client}).encode()
    async with kafka_world(kafka_bootstrap) as world:
        if client.startswith("paho"):
            await publish_with_paho(world, V5 if "-v5-" in client else V311, int(client[-1]), payload)
        elif client.startswith("amqtt"):
            await publish_with_amqtt(world, payload)
        else:
            await publish_with_mosquitto(world, "mqttv5" if "-v5-" in client else "mqttv311", payload)
        records = await read_events(kafka_bootstrap, f"events-{world.a}", lambda r: len(r) >= 1)
    assert len(records) == 1
    record = records[0]
    attributes = headers(record)
    assert record.key == f"{world.a}/d".encode()
    assert record.value == payload
    assert attributes["ce_specversion"] == "1.0"
    assert attributes["ce_source"] == f"drogue://{world.a}/d"
    assert attributes["ce_subject"] == "telemetry"
    assert (attributes["ce_application"], attributes["ce_device"], attributes["ce_sender"]) == (world.a, "d", "d")
    assert attributes["ce_partitionkey"] == f"{world.a}/d"
    if "-v5-" in client:
        assert attributes["content-type"] == "application/json"
        assert attributes["ce_trace"] == "t-1"
    else:
        assert "content-type" not in attributes


async def test_connection_events_land_in_kafka(kafka_bootstrap: str) -> None:
    async with kafka_world(kafka_bootstrap) as world:
        async with paho_client(world.port, f"d@{world.a}", "pw"):
            pass
        consumer = AIOKafkaConsumer(f"events-{world.a}", bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            first, second = await asyncio.wait_for(consumer.getone(), 20), await asyncio.wait_for(consumer.getone(), 20)
        finally:
            await consumer.stop()
    for record, connected in ((first, True), (second, False)):
        attributes = headers(record)
        assert attributes["ce_type"] == "io.drogue.connection.v1"
        assert (attributes["ce_subject"], attributes["content-type"]) == ("connection", "application/json")
        assert json.loads(record.value) == {"connected": connected}
        assert record.key == f"{world.a}/d".encode()


def connection_event_failures() -> float:
    return REGISTRY.get_sample_value("hawser_mqtt_endpoint_connection_event_failures_total") or 0.0


async def test_kafka_stopped_mid_stream(kafka: Any) -> None:
    acknowledged: set[int] = set()
    refused: list[int] = []
    async with kafka_world(kafka.bootstrap, send_timeout_s=2.0) as world, \
            paho_client(world.port, f"d@{world.a}", "pw", client_id="v5") as device:

        async def publish(seq: int) -> None:
            reason = await device.publish("seq", json.dumps({"seq": seq}).encode(), timeout=30)
            if reason.is_failure:
                assert reason.value == 0x80, reason  # unspecified error: the bus did not take it
                refused.append(seq)
            else:
                acknowledged.add(seq)

        await asyncio.gather(*(publish(seq) for seq in range(10)))
        assert acknowledged == set(range(10))
        failures = connection_event_failures()
        kafka.stop()
        try:
            await asyncio.gather(*(publish(seq) for seq in range(10, 15)))
            assert refused, "publishes while Kafka was down were all acknowledged"
            # A 3.1.1 device is disconnected instead of refused: its publish is never acknowledged.
            async with paho_client(world.port, f"d@{world.a}", "pw", version=V311, client_id="v3") as old:
                pending = old.publish_nowait("seq", b'{"seq": -1}')
                await old.wait_disconnected(timeout=30)
                assert not pending.done()
            # Connecting still works; the lost connection event is only counted.
            await eventually(lambda: connection_event_failures() > failures, timeout=20)
        finally:
            kafka.start()
        seq, deadline = 15, time.monotonic() + 60
        while time.monotonic() < deadline:  # until Kafka takes messages again (bounded)
            await publish(seq)
            seq += 1
            if seq - 1 in acknowledged:
                break
        await asyncio.gather(*(publish(s) for s in range(seq, seq + 10)))
    records = await read_events(kafka.bootstrap, f"events-{world.a}",
                                lambda rs: acknowledged <= {json.loads(r.value)["seq"] for r in rs})
    stored = {json.loads(r.value)["seq"] for r in records}
    assert acknowledged <= stored, f"acknowledged but lost: {sorted(acknowledged - stored)}"
