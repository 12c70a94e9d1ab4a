"""MQTT end to end through the composition root, as `hawser serve` runs it: a device publishes with
paho or mosquitto_pub (plain and TLS) → registry auth → the bus (Kafka, the embedded log) → an
application subscribed through the MQTT integration with paho or mosquitto_sub."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.e2e.conftest import Admin, GatewayFactory
from tests.e2e.test_spine import read_topic
from tests.paho import V5, V311, Paho, paho_properties, user_properties


async def run(*argv: str, timeout: float = 20.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


@pytest.mark.kafka
async def test_paho_device_to_kafka_and_to_an_mqtt_application(
    gateway_factory: GatewayFactory, kafka_bootstrap: str
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    async with gateway_factory(bootstrap=kafka_bootstrap) as gateway:
        token = gateway.bootstrap_token
        assert token
        assert gateway.mqtt_port
        assert gateway.mqtt_integration_port
        admin = Admin(gateway, token)
        await admin.create_app(app)
        await admin.create_device(app, "gw", "gw-secret")
        await admin.create_device(app, "sensor-1", "s1", gatewaySelector={"matchNames": ["gw"]})

        listener = Paho("listener", version=V5, username=token)
        device = Paho("gw-client", version=V5, username=f"gw@{app}", password="gw-secret")
        legacy = Paho("legacy-listener", version=V311, username="admin", password=token)
        try:
            assert await listener.connect(gateway.mqtt_integration_port) == 0
            assert await listener.subscribe([(f"app/{app}", 1)]) == [1]
            assert await legacy.connect(gateway.mqtt_integration_port) == 0
            assert await legacy.subscribe([(f"app/{app}", 1)]) == [1]
            assert await device.connect(gateway.mqtt_port) == 0
            props = paho_properties(ContentType="application/json", UserProperty=[("unit", "celsius")])
            assert await device.publish("telemetry", b'{"temp": 21}', qos=1, properties=props) == 0
            assert await device.publish("state/sensor-1", b"\x01\x02", qos=1) == 0

            # The application sees the device's connection event and both messages.
            received = [await listener.next_message() for _ in range(3)]
            structured = [json.loads((await legacy.next_message()).payload) for _ in range(3)]
        finally:
            for client in (device, listener, legacy):
                await client.aclose()
        await admin.aclose()

    by_subject = {user_properties(m)["subject"]: m for m in received}
    assert set(by_subject) == {"connection", "telemetry", "state"}
    telemetry = by_subject["telemetry"]
    attributes = user_properties(telemetry)
    assert telemetry.topic == f"app/{app}"
    assert telemetry.payload == b'{"temp": 21}'
    assert telemetry.properties is not None
    assert telemetry.properties.ContentType == "application/json"  # type: ignore[attr-defined]
    assert attributes["type"] == "io.drogue.event.v1"
    assert attributes["device"] == attributes["sender"] == "gw"
    assert attributes["unit"] == "celsius"
    relayed = user_properties(by_subject["state"])
    assert (relayed["device"], relayed["sender"]) == ("sensor-1", "gw")
    assert json.loads(by_subject["connection"].payload) == {"connected": True}

    legacy_subjects = {event["subject"]: event for event in structured}
    assert legacy_subjects["telemetry"]["data"] == {"temp": 21}
    assert legacy_subjects["state"]["data_base64"] == "AQI="

    records = await read_topic(kafka_bootstrap, f"events-{app}", 5)
    kinds = [(dict(r.headers)["ce_subject"].decode(), dict(r.headers)["ce_type"].decode()) for r in records]
    assert ("telemetry", "io.drogue.event.v1") in kinds
    assert ("state", "io.drogue.event.v1") in kinds
    connection_events = [r for r in records if dict(r.headers)["ce_type"] == b"io.drogue.connection.v1"]
    assert [json.loads(r.value) for r in connection_events] == [{"connected": True}, {"connected": False}]


async def test_mosquitto_clients_over_tls_with_the_generated_certificate(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gateway:
        token = gateway.bootstrap_token
        assert token
        assert gateway.mqtt_tls_port
        assert gateway.mqtt_integration_tls_port
        cafile = str(gateway.settings.data_dir / "tls" / "cert.pem")
        admin = Admin(gateway, token)
        await admin.create_app("tls-app")
        await admin.create_device("tls-app", "dev", "dev-pass")

        subscriber = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-h", "localhost", "-p", str(gateway.mqtt_integration_tls_port), "--cafile", cafile,
            "-V", "mqttv311", "-u", "admin", "-P", token, "-t", "app/tls-app", "-C", "3", "-W", "20", "-q", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            # mosquitto_sub has no readiness signal: publish until it has seen three events (it exits
            # after -C 3); every publish must be acknowledged. Each mosquitto_pub is connected,
            # telemetry, disconnected: any three events in a row hold a telemetry event.
            async def publish_until_received() -> None:
                while subscriber.returncode is None:
                    code, out = await run(
                        "mosquitto_pub", "-h", "localhost", "-p", str(gateway.mqtt_tls_port), "--cafile", cafile,
                        "-V", "mqttv5", "-q", "1", "-u", "dev@tls-app", "-P", "dev-pass", "-t", "telemetry",
                        "-m", '{"over": "tls"}', "-D", "publish", "content-type", "application/json",
                    )
                    assert code == 0, out
                    await asyncio.sleep(0.2)  # pacing only: the loop ends on the subscriber's exit

            publisher = asyncio.create_task(publish_until_received())
            out, err = await asyncio.wait_for(subscriber.communicate(), 30)
            await publisher
        finally:
            if subscriber.returncode is None:
                subscriber.kill()
                await subscriber.wait()
        await admin.aclose()
    assert subscriber.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    telemetry = [e for e in events if e["subject"] == "telemetry"]
    assert telemetry
    assert telemetry[0]["data"] == {"over": "tls"}
    assert telemetry[0]["device"] == "dev"


async def test_shutdown_tells_mqtt5_devices_and_records_their_disconnection(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gateway:
        token = gateway.bootstrap_token
        assert token
        assert gateway.mqtt_port
        admin = Admin(gateway, token)
        await admin.create_app("shut")
        await admin.create_device("shut", "dev", "pw")
        await admin.aclose()
        # A group positioned now: after the restart it reads everything sent from here on.
        await (await gateway.bus.subscribe(["events-shut"], group="check")).aclose()
        device = Paho("dev-1", version=V5, username="dev@shut", password="pw")
        try:
            assert await device.connect(gateway.mqtt_port) == 0
            assert await device.publish("telemetry", b"1", qos=1) == 0
            await gateway.aclose()  # what SIGTERM does
            assert await device.wait_disconnected() == 0x8B  # server shutting down
        finally:
            await device.aclose()

    async with gateway_factory() as gateway:
        events = []
        async with await gateway.bus.subscribe(["events-shut"], group="check") as subscription:
            async for delivery in subscription:
                events.append(delivery.event)
                if len(events) == 3:
                    break
    assert [e.attributes["subject"] for e in events] == ["connection", "telemetry", "connection"]
    assert [json.loads(events[i].data) for i in (0, 2)] == [{"connected": True}, {"connected": False}]
