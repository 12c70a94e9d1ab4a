"""`Ingest.publish_connection`: the `io.drogue.connection.v1` event as Drogue's device state service
writes it (subject `connection`, JSON data, the device as its own sender), and its failures."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from auth.devices import AuthOutcome
from endpoints.ingest import Ingest
from hawser.errors import BusUnavailable
from registry.values import ApplicationInfo, DeviceInfo
from tests.endpoints.fakes import RecordingBus

APP = ApplicationInfo("my-app", "app-uid")
GATEWAY = DeviceInfo("my-app", "gate way", "gw-uid")
SENSOR = DeviceInfo("my-app", "sensor/1", "sensor-uid")


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("hawser_ingest_connection_events_total", {"outcome": outcome}) or 0.0


@pytest.mark.parametrize("connected", [True, False])
async def test_connection_event(connected: bool) -> None:
    bus = RecordingBus()
    ingest = Ingest(bus, instance="inst-1", max_payload_bytes=10)  # the limit is for device payloads
    before = counted("published")
    event = await ingest.publish_connection(AuthOutcome(APP, GATEWAY, GATEWAY), connected)
    assert bus.sent == [("events-my-app", event, "my-app/gate%20way")]
    assert json.loads(event.data) == {"connected": connected}
    attrs = dict(event.attributes)
    for name in ("id", "time"):
        attrs.pop(name)
    assert attrs == {
        "specversion": "1.0",
        "type": "io.drogue.connection.v1",
        "source": "drogue://my-app/gate%20way",
        "subject": "connection",
        "datacontenttype": "application/json",
        "application": "my-app",
        "applicationuid": "app-uid",
        "device": "gate way",
        "deviceuid": "gw-uid",
        "sender": "gate way",
        "senderuid": "gw-uid",
        "instance": "inst-1",
        "partitionkey": "my-app/gate%20way",
    }
    assert counted("published") == before + 1


async def test_connection_event_is_about_the_connected_device_never_a_target() -> None:
    bus = RecordingBus()
    event = await Ingest(bus, instance="i", max_payload_bytes=10).publish_connection(
        AuthOutcome(APP, GATEWAY, SENSOR), True
    )
    assert (event.attributes["device"], event.attributes["sender"]) == ("gate way", "gate way")
    assert bus.sent[0][2] == "my-app/gate%20way"


async def test_connection_event_bus_down_raises_and_counts() -> None:
    bus = RecordingBus(down=True)
    before = counted("bus-unavailable")
    with pytest.raises(BusUnavailable):
        await Ingest(bus, instance="i", max_payload_bytes=10).publish_connection(
            AuthOutcome(APP, GATEWAY, GATEWAY), False
        )
    assert counted("bus-unavailable") == before + 1
