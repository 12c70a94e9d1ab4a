"""The spine end to end, over real sockets: HTTP device → registry auth → bus (Kafka or the embedded
log) → Kafka consumer or WebSocket application, through the composition root as `hawser serve` runs it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import websockets
from aiokafka import AIOKafkaConsumer

from tests.e2e.conftest import Admin, GatewayFactory, basic

TOKEN = "hwsr_e2e_" + "t" * 40


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Any]:
    """Every record of `topic` from the beginning, until `count` arrived or the deadline passed."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.kafka
async def test_http_publish_lands_on_kafka_in_binary_mode(
    gateway_factory: GatewayFactory, kafka_bootstrap: str
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    async with gateway_factory(bootstrap=kafka_bootstrap) as gateway:
        gateway_token = gateway.bootstrap_token
        assert gateway_token
        admin = Admin(gateway, gateway_token)
        await admin.create_app(app)
        await admin.create_device(app, "gw", "gw-secret")
        await admin.create_device(app, "sensör:1", "s1-secret", gatewaySelector={"matchNames": ["gw"]})
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as device:
            own = await device.post(
                "/v1/telemetry?data_schema=urn:temp",
                content=b'{"temp": 21}',
                headers={"Authorization": basic(f"gw@{app}", "gw-secret"), "Content-Type": "application/json"},
            )
            assert own.status_code == 202, own.text
            relayed = await device.post(
                "/v1/state/sens%C3%B6r:1",
                content=b"\x00\x01binary",
                headers={"Authorization": basic(f"gw@{app}", "gw-secret"),
                         "Content-Type": "application/octet-stream"},
            )
            assert relayed.status_code == 202, relayed.text
        await admin.aclose()

    records = await read_topic(kafka_bootstrap, f"events-{app}", 2)
    assert len(records) == 2
    by_subject = {dict(r.headers)["ce_subject"].decode(): r for r in records}

    first = by_subject["telemetry"]
    headers = {k: v.decode() for k, v in first.headers}
    assert first.key == f"{app}/gw".encode()
    assert first.value == b'{"temp": 21}'
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "io.drogue.event.v1"
    assert headers["ce_source"] == f"drogue://{app}/gw"
    assert headers["content-type"] == "application/json"
    assert headers["ce_dataschema"] == "urn:temp"
    assert headers["ce_application"] == app
    assert headers["ce_device"] == headers["ce_sender"] == "gw"
    assert headers["ce_instance"] == "test-instance"
    assert headers["ce_partitionkey"] == f"{app}/gw"
    assert uuid.UUID(headers["ce_id"]).version == 4
    assert headers["ce_applicationuid"]
    assert headers["ce_deviceuid"] == headers["ce_senderuid"]

    second = by_subject["state"]
    headers = {k: v.decode() for k, v in second.headers}
    assert second.key == f"{app}/sens%C3%B6r%3A1".encode()
    assert second.value == b"\x00\x01binary"
    assert headers["ce_device"] == "sensör:1"
    assert headers["ce_sender"] == "gw"
    assert headers["ce_source"] == f"drogue://{app}/sens%C3%B6r%3A1"
    assert headers["ce_deviceuid"] != headers["ce_senderuid"]


async def test_http_publish_reaches_websocket_through_embedded_log(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gateway:
        token = gateway.bootstrap_token
        assert token
        admin = Admin(gateway, token)
        await admin.create_app("shop")
        await admin.create_device("shop", "till", "till-pass")
        url = f"ws://127.0.0.1:{gateway.api_port}/api/integration/v1/apps/shop/events?token={token}"
        async with websockets.connect(url) as ws, httpx.AsyncClient() as device:
            response = await device.post(
                f"http://127.0.0.1:{gateway.http_port}/v1/sales",
                json={"total": 9.5},
                headers={"Authorization": basic("till@shop", "till-pass")},
            )
            assert response.status_code == 202
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await admin.aclose()
    assert event["type"] == "io.drogue.event.v1"
    assert event["source"] == "drogue://shop/till"
    assert event["subject"] == "sales"
    assert event["application"] == "shop"
    assert event["device"] == "till"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {"total": 9.5}


@pytest.mark.kafka
async def test_kafka_down_gives_503_and_every_accepted_message_survives(
    gateway_factory: GatewayFactory, kafka: Any
) -> None:
    app = f"down-{uuid.uuid4().hex[:8]}"
    accepted: set[int] = set()
    refused: list[httpx.Response] = []
    async with gateway_factory(bootstrap=kafka.bootstrap, send_timeout_s=3.0) as gateway:
        token = gateway.bootstrap_token
        assert token
        admin = Admin(gateway, token)
        await admin.create_app(app)
        await admin.create_device(app, "d", "pw")
        auth = basic(f"d@{app}", "pw")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=30) as device:

            async def publish(seq: int) -> None:
                response = await device.post("/v1/t", json={"seq": seq}, headers={"Authorization": auth})
                if response.status_code == 202:
                    accepted.add(seq)
                else:
                    refused.append(response)

            await asyncio.gather(*(publish(seq) for seq in range(20)))
            assert len(accepted) == 20
            kafka.stop()
            try:
                await asyncio.gather(*(publish(seq) for seq in range(20, 30)))
                assert refused, "publishes while Kafka was down were all accepted"
            finally:
                kafka.start()
            # Publish until the bus takes messages again (bounded), then a final batch.
            seq = 30
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await publish(seq)
                seq += 1
                if seq - 1 in accepted:
                    break
            await asyncio.gather(*(publish(s) for s in range(seq, seq + 10)))
        await admin.aclose()

    for response in refused:
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["status"] == 503
    records = await read_topic(kafka.bootstrap, f"events-{app}", len(accepted), timeout=30)
    stored = {json.loads(r.value)["seq"] for r in records}
    assert accepted <= stored, f"acknowledged but lost: {sorted(accepted - stored)}"


async def test_restart_keeps_events_and_a_group_resumes_without_loss_or_repeat(
    gateway_factory: GatewayFactory,
) -> None:
    async def publish(gateway: Any, seqs: range) -> None:
        async with httpx.AsyncClient() as device:
            for seq in seqs:
                response = await device.post(
                    f"http://127.0.0.1:{gateway.http_port}/v1/t", json={"seq": seq},
                    headers={"Authorization": basic("d@plant", "pw")},
                )
                assert response.status_code == 202

    async def receive(gateway: Any, token: str, count: int) -> list[int]:
        url = (f"ws://127.0.0.1:{gateway.api_port}/api/integration/v1/apps/plant/events"
               f"?group_id=dashboard&token={token}")
        seen: list[int] = []
        async with websockets.connect(url) as ws:
            while len(seen) < count:
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["data"]["seq"])
            with pytest.raises(TimeoutError):  # and nothing more
                await asyncio.wait_for(ws.recv(), 0.5)
        return seen

    async with gateway_factory() as gateway:
        token = gateway.bootstrap_token
        assert token
        admin = Admin(gateway, token)
        await admin.create_app("plant")
        await admin.create_device("plant", "d", "pw")
        await admin.aclose()
        # The group joins, reads the first five, and goes away; five more arrive while it is away.
        url = (f"ws://127.0.0.1:{gateway.api_port}/api/integration/v1/apps/plant/events"
               f"?group_id=dashboard&token={token}")
        async with websockets.connect(url) as ws:
            await publish(gateway, range(5))
            first = [json.loads(await asyncio.wait_for(ws.recv(), 10))["data"]["seq"] for _ in range(5)]
        await publish(gateway, range(5, 10))

    async with gateway_factory() as gateway:
        assert gateway.bootstrap_token is None  # created once, on the first start only
        await publish(gateway, range(10, 12))
        rest = await receive(gateway, token, 7)

    assert first == [0, 1, 2, 3, 4]
    assert sorted(rest) == list(range(5, 12))


async def test_a_member_of_one_application_sees_nothing_of_another(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory() as gateway:
        token = gateway.bootstrap_token
        assert token
        admin = Admin(gateway, token)
        for app in ("tenant-a", "tenant-b"):
            await admin.create_app(app)
            await admin.create_device(app, "d", "pw")
        created = await admin.client.post("/api/tokens/v1alpha1", json={"user": "alice"})
        assert created.status_code == 201, created.text
        alice_token = created.json()["token"]
        members = await admin.client.put("/api/admin/v1alpha1/apps/tenant-a/members",
                                         json={"members": {"alice": {"role": "reader"}}})
        assert members.status_code == 204, members.text
        await admin.aclose()

        api = f"http://127.0.0.1:{gateway.api_port}"
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {alice_token}"}) as alice:
            assert (await alice.get("/api/registry/v1alpha1/apps/tenant-a")).status_code == 200
            listed = (await alice.get("/api/registry/v1alpha1/apps")).json()
            names = [doc["metadata"]["name"] for doc in (listed["items"] if isinstance(listed, dict) else listed)]
            assert names == ["tenant-a"]
            for path in ("/apps/tenant-b", "/apps/tenant-b/devices", "/apps/tenant-b/devices/d"):
                response = await alice.get("/api/registry/v1alpha1" + path)
                assert response.status_code == 404, path
                assert response.headers["content-type"] == "application/problem+json"
            delete = await alice.delete("/api/registry/v1alpha1/apps/tenant-b")
            assert delete.status_code == 404
            write = await alice.delete("/api/registry/v1alpha1/apps/tenant-a/devices/d")
            assert write.status_code == 403  # a reader may look, not change

        ws_base = f"ws://127.0.0.1:{gateway.api_port}/api/integration/v1/apps"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{ws_base}/tenant-b/events?token={alice_token}"):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(f"{ws_base}/tenant-a/events?token={alice_token}") as ws, \
                httpx.AsyncClient() as device:
            for app in ("tenant-b", "tenant-a"):
                response = await device.post(f"http://127.0.0.1:{gateway.http_port}/v1/t", json={"app": app},
                                             headers={"Authorization": basic(f"d@{app}", "pw")})
                assert response.status_code == 202
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert event["application"] == "tenant-a"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
