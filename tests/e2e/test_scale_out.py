"""One service per process, as a scaled-out deployment runs them: the API, the MQTT endpoint and the MQTT
integration as three gateways sharing only PostgreSQL and Kafka. A device publishes to one, an
application reads through another, and the registry is managed through the third."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from hawser.config import RegistrySettings, Settings
from hawser.server import Gateway
from tests.e2e.conftest import Admin, gateway_settings
from tests.paho import V5, Paho, user_properties


def one_service(tmp_path: Path, name: str, service: str, kafka_bootstrap: str, postgres_url: str) -> Settings:
    settings = gateway_settings(tmp_path / name, bootstrap=kafka_bootstrap)
    return settings.model_copy(update={"services": (service,), "instance": name,
                                       "registry": RegistrySettings(database_url=postgres_url)})


@pytest.mark.kafka
async def test_each_service_in_its_own_gateway(tmp_path: Path, kafka_bootstrap: str, postgres_url: str) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    async with (
        Gateway(one_service(tmp_path, "api", "api", kafka_bootstrap, postgres_url)) as api,
        Gateway(one_service(tmp_path, "devices", "mqtt-endpoint", kafka_bootstrap, postgres_url)) as devices,
        Gateway(one_service(tmp_path, "apps", "mqtt-integration", kafka_bootstrap, postgres_url)) as apps,
    ):
        assert (api.http_port, api.mqtt_port, api.mqtt_integration_port) == (None, None, None)
        assert devices.api_port is None
        assert devices.mqtt_port is not None
        assert apps.mqtt_integration_port is not None
        token = api.bootstrap_token
        assert token
        admin = Admin(api, token)
        await admin.create_app(app)
        await admin.create_device(app, "d", "pw")
        await admin.aclose()

        listener = Paho("listener", version=V5, username=token)
        device = Paho("d-1", version=V5, username=f"d@{app}", password="pw")
        try:
            assert await listener.connect(apps.mqtt_integration_port) == 0
            assert await listener.subscribe([(f"app/{app}", 1)]) == [1]
            assert await device.connect(devices.mqtt_port) == 0
            assert await device.publish("telemetry", b'{"n": 1}') == 0
            messages = [await listener.next_message() for _ in range(2)]
        finally:
            await device.aclose()
            await listener.aclose()

    connected, telemetry = sorted(messages, key=lambda m: user_properties(m)["subject"])
    assert json.loads(connected.payload) == {"connected": True}
    assert telemetry.payload == b'{"n": 1}'
    assert user_properties(telemetry)["instance"] == "devices"
