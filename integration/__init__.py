"""App-facing servers: the WebSocket integration (API port 8081) and the MQTT integration (1884/8884)."""

from __future__ import annotations

from integration._access import Memberships
from integration.mqtt import MqttIntegration
from integration.websocket import routes

__all__ = ["Memberships", "MqttIntegration", "routes"]
