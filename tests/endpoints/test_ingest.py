"""The ingest pipeline: every attribute of the event, the payload checks, the bus's answer."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from auth.devices import AuthOutcome
from endpoints.ingest import Ingest
from endpoints.uplink import Uplink
from hawser.bus.embedded import EmbeddedBus
from hawser.errors import BadJson, BusUnavailable, PayloadTooLarge
from registry.values import ApplicationInfo, DeviceInfo
from tests.endpoints.fakes import RecordingBus

APP = ApplicationInfo("my-app", "app-uid")
GATEWAY = DeviceInfo("my-app", "gate way", "gw-uid")
SENSOR = DeviceInfo("my-app", "sensor/1", "sensor-uid")


def published(outcome: str) -> float:
    return REGISTRY.get_sample_value("hawser_ingest_events_total", {"outcome": outcome}) or 0.0


async def test_event_carries_every_attribute() -> None:
    bus = RecordingBus()
    ingest = Ingest(bus, instance="inst-1", max_payload_bytes=100)
    before = published("published")
    event = await ingest.publish(
        AuthOutcome(APP, GATEWAY, SENSOR),
        Uplink("temp", content_type="application/json", data_schema="urn:schema:t"),
        b'{"t":1}',
        extensions={"custom": "x", "device": "must-not-override"},
    )
    assert bus.sent == [("events-my-app", event, "my-app/sensor%2F1")]
    attrs = dict(event.attributes)
    event_id = uuid.UUID(attrs.pop("id"))
    assert (event_id.version, event_id.variant) == (4, uuid.RFC_4122)
    assert attrs.pop("time").endswith("Z")
    assert attrs == {
        "specversion": "1.0",
        "type": "io.drogue.event.v1",
        "source": "drogue://my-app/sensor%2F1",
        "subject": "temp",
        "datacontenttype": "application/json",
        "dataschema": "urn:schema:t",
        "application": "my-app",
        "applicationuid": "app-uid",
        "device": "sensor/1",
        "deviceuid": "sensor-uid",
        "sender": "gate way",
        "senderuid": "gw-uid",
        "instance": "inst-1",
        "partitionkey": "my-app/sensor%2F1",
        "custom": "x",
    }
    assert event.data == b'{"t":1}'
    assert published("published") == before + 1


async def test_optional_attributes_are_left_out() -> None:
    bus = RecordingBus()
    event = await Ingest(bus, instance="i", max_payload_bytes=10).publish(
        AuthOutcome(APP, SENSOR, SENSOR), Uplink("c", content_type=None, data_schema=None), b""
    )
    assert "datacontenttype" not in event.attributes
    assert "dataschema" not in event.attributes
    assert event.attributes["sender"] == event.attributes["device"] == "sensor/1"


async def test_size_limit_is_inclusive() -> None:
    bus = RecordingBus()
    ingest = Ingest(bus, instance="i", max_payload_bytes=4)
    await ingest.publish(
        AuthOutcome(APP, SENSOR, SENSOR), Uplink("c", content_type="text/plain", data_schema=None), b"1234"
    )
    before = published("too-large")
    with pytest.raises(PayloadTooLarge) as caught:
        await ingest.publish(
            AuthOutcome(APP, SENSOR, SENSOR), Uplink("c", content_type="text/plain", data_schema=None), b"12345"
        )
    assert (caught.value.size, caught.value.limit) == (5, 4)
    assert len(bus.sent) == 1
    assert published("too-large") == before + 1


@pytest.mark.parametrize(
    ("content_type", "payload", "ok"),
    [
        ("application/json", b'{"a": [1, 2]}', True),
        ("application/json", b"{nope", False),
        ("application/json", b"NaN", False),  # serde_json (Drogue) refuses NaN and the infinities
        ("application/json", b"[Infinity]", False),
        ("application/json", b'{"a": -Infinity}', False),
        ("application/json", b"[" * 100_000, False),  # deeper than the parser recurses
        ("application/json", b"[" * 100_000 + b"]" * 100_000, False),
        ("application/json", b"[1e999]", False),  # out of range for a double, as serde_json says
        ("application/json", b"[1e308, -0.5, 12345678901234567890]", True),
        ("application/json", b"\xef\xbb\xbf{}", False),  # a BOM is not JSON text
        ("application/json", b'"\xff"', False),
        ("application/json; charset=utf-8", b"\xff\xfe", False),
        ("Application/JSON", b"", False),
        ("application/cloudevents+json", b"[1", False),
        ("application/json", b'{"s": "\\ud800"}', False),  # a lone surrogate is no text (serde_json refuses it)
        ("application/json", b'["\\udc00x"]', False),
        ("application/json", b'{"s": "\\uD83D\\uDE00"}', True),  # an escaped pair is an emoji
        ("application/json", b'{"s": "\\\\ud800"}', True),  # an escaped backslash, then text
        ("text/json", b"null", True),
        ("text/plain", b"{nope", True),
        ("application/octet-stream", b"\xff", True),
        (None, b"{nope", True),
    ],
)
async def test_json_is_checked_only_for_json_types(content_type: str | None, payload: bytes, ok: bool) -> None:
    bus = RecordingBus()
    ingest = Ingest(bus, instance="i", max_payload_bytes=300_000)
    if ok:
        await ingest.publish(
            AuthOutcome(APP, SENSOR, SENSOR), Uplink("c", content_type=content_type, data_schema=None), payload
        )
        assert len(bus.sent) == 1
    else:
        with pytest.raises(BadJson):
            await ingest.publish(
                AuthOutcome(APP, SENSOR, SENSOR), Uplink("c", content_type=content_type, data_schema=None), payload
            )
        assert bus.sent == []


async def test_bus_unavailable_propagates() -> None:
    bus = RecordingBus(down=True, retry_after=9)
    before = published("bus-unavailable")
    with pytest.raises(BusUnavailable) as caught:
        await Ingest(bus, instance="i", max_payload_bytes=10).publish(
            AuthOutcome(APP, SENSOR, SENSOR), Uplink("c", content_type=None, data_schema=None), b"x"
        )
    assert caught.value.retry_after == 9
    assert published("bus-unavailable") == before + 1


async def test_event_round_trips_through_the_embedded_log(tmp_path: Path) -> None:
    async with EmbeddedBus(tmp_path / "events.db", partitions=2) as bus:
        await bus.ensure_topic("events-my-app")
        async with await bus.subscribe(["events-my-app"]) as subscription:
            event = await Ingest(bus, instance="i", max_payload_bytes=100).publish(
                AuthOutcome(APP, GATEWAY, SENSOR), Uplink("temp", content_type="text/plain", data_schema=None), b"21.5"
            )
            delivery = await asyncio.wait_for(anext(aiter(subscription)), 10)
    assert delivery.key == "my-app/sensor%2F1"
    assert dict(delivery.event.attributes) == dict(event.attributes)
    assert delivery.event.data == b"21.5"
