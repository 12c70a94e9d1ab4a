"""App-facing servers: the WebSocket integration now, the MQTT integration later."""

from __future__ import annotations

from integration.websocket import Memberships, routes

__all__ = ["Memberships", "routes"]
