"""A whole Hawser gateway (the composition root) on ephemeral ports, for end-to-end tests."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hawser.config import (
    ApiSettings,
    AuthSettings,
    BusSettings,
    CoapEndpointSettings,
    HttpEndpointSettings,
    MqttEndpointSettings,
    MqttIntegrationSettings,
    Settings,
)
from hawser.server import Gateway

#: Cheap KDF cost for tests: the cost does not change what is tested, only how long it takes.
TEST_AUTH = AuthSettings(argon2_time_cost=1, argon2_memory_kib=1024)


def gateway_settings(data_dir: Path, *, bootstrap: str | None = None, **bus: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        instance="test-instance",
        http=HttpEndpointSettings(host="127.0.0.1", port=0, max_payload_bytes=64 * 1024),
        api=ApiSettings(host="127.0.0.1", port=0),
        mqtt=MqttEndpointSettings(host="127.0.0.1", port=0, tls_port=0, max_payload_bytes=64 * 1024),
        mqtt_integration=MqttIntegrationSettings(host="127.0.0.1", port=0, tls_port=0),
        coap=CoapEndpointSettings(host="127.0.0.1", port=0, dtls_port=0),
        auth=TEST_AUTH,
        bus=BusSettings(kind="kafka", kafka_bootstrap=bootstrap, **bus) if bootstrap else BusSettings(**bus),
    )


GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> GatewayFactory:
    @asynccontextmanager
    async def start(**kwargs: Any) -> AsyncIterator[Gateway]:
        async with Gateway(gateway_settings(tmp_path / "data", **kwargs)) as gateway:
            yield gateway

    return start


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Admin:
    """The registry API as an admin would use it (real HTTP over a socket)."""

    def __init__(self, gateway: Gateway, token: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.api_port}", headers={"Authorization": f"Bearer {token}"}
        )

    async def create_app(self, name: str) -> None:
        response = await self.client.post("/api/registry/v1alpha1/apps", json={"metadata": {"name": name}})
        assert response.status_code == 201, response.text

    async def create_device(self, app: str, name: str, password: str, **spec: Any) -> None:
        body = {
            "metadata": {"name": name, "application": app},
            "spec": {"authentication": {"credentials": [{"pass": password}]}, **spec},
        }
        response = await self.client.post(f"/api/registry/v1alpha1/apps/{app}/devices", json=body)
        assert response.status_code == 201, response.text

    async def aclose(self) -> None:
        await self.client.aclose()
