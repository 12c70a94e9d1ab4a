"""Device-facing servers (HTTP with the TTN webhooks, MQTT and CoAP) and `ingest`, the one pipeline all of
them call. Never imports `integration`."""

from __future__ import annotations

from endpoints.coap import CoapEndpoint, CoapServer, start_coap_server
from endpoints.http import HTTP_STATUS, build_app
from endpoints.ingest import Ingest
from endpoints.mqtt import MqttEndpoint
from endpoints.uplink import DeviceCredentials, Uplink, parse_basic_auth, parse_uplink

__all__ = [
    "HTTP_STATUS",
    "CoapEndpoint",
    "CoapServer",
    "DeviceCredentials",
    "Ingest",
    "MqttEndpoint",
    "Uplink",
    "build_app",
    "parse_basic_auth",
    "parse_uplink",
    "start_coap_server",
]
