"""The one ingest pipeline every device protocol calls: check the payload, build the CloudEvent with
every Drogue attribute, put it on the application's topic and return only once the bus holds it.

Nothing else in Hawser builds device events or sends them to the bus. The caller acknowledges the
device only after `publish` returned; any error it raises means the message was not taken.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from prometheus_client import Counter

from auth.devices import AuthOutcome
from endpoints.uplink import Uplink
from hawser.bus.base import EventBus
from hawser.errors import BadJson, BusUnavailable, PayloadTooLarge
from hawser.events import (
    CONNECTION_TYPE,
    CloudEvent,
    EventOrigin,
    event_template,
    events_topic,
    is_json_content_type,
)

EVENTS = Counter("hawser_ingest_events", "Device events offered to the bus, by outcome.", ["outcome"])
_PUBLISHED = EVENTS.labels("published")
_TOO_LARGE = EVENTS.labels("too-large")
_BAD_JSON = EVENTS.labels("bad-json")
_BUS_UNAVAILABLE = EVENTS.labels("bus-unavailable")
_FAILED = EVENTS.labels("failed")
CONNECTION_EVENTS = Counter(
    "hawser_ingest_connection_events", "Device connection events offered to the bus, by outcome.", ["outcome"]
)
_CONNECTION_PUBLISHED = CONNECTION_EVENTS.labels("published")
_CONNECTION_BUS_UNAVAILABLE = CONNECTION_EVENTS.labels("bus-unavailable")
_CONNECTION_FAILED = CONNECTION_EVENTS.labels("failed")

#: The channel (`subject`), content type and data of connection events, as Drogue's device state
#: service writes them (`device-state-service/src/service/postgres.rs`, serde_json's compact form).
CONNECTION_CHANNEL = "connection"
_CONNECTION_DATA = {True: b'{"connected":true}', False: b'{"connected":false}'}


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


# Strict JSON as serde_json reads it (Drogue): UTF-8 text, no NaN, Infinity or -Infinity, and no
# number beyond a double's range (which Python would read as infinity and later write as `Infinity`).
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


#: A `\\uD800`-`\\uDFFF` escape: JSON's grammar allows a lone one, but it is no text (serde_json refuses it),
#: and an event holding one could never be written as UTF-8 to an application.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_json(payload: bytes) -> None:
    """BadJson unless `payload` is one JSON value in UTF-8 whose strings are all text (no lone
    surrogate escapes); nesting too deep to parse counts as not JSON too."""
    try:
        text = payload.decode("utf-8")
        value = _DECODER.decode(text)
        if _SURROGATE_ESCAPE.search(text):  # rare: only then is the value checked (pairs are fine)
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError and UnicodeEncodeError are ValueErrors
        _BAD_JSON.inc()
        raise BadJson() from None


class Ingest:
    """Publishes authenticated devices' messages as CloudEvents on `events-<app>`."""

    def __init__(self, bus: EventBus, *, instance: str, max_payload_bytes: int) -> None:
        self.bus = bus
        self.instance = instance
        self.max_payload_bytes = max_payload_bytes

    def check_payload(self, payload: bytes, content_type: str | None) -> None:
        """Raise PayloadTooLarge or BadJson; adapters may call it before authenticating too.
        The one size check every protocol gets (HTTP also stops reading at the same limit)."""
        if len(payload) > self.max_payload_bytes:
            _TOO_LARGE.inc()
            raise PayloadTooLarge(len(payload), self.max_payload_bytes)
        if is_json_content_type(content_type):
            check_json(payload)

    async def publish(
        self,
        outcome: AuthOutcome,
        uplink: Uplink,
        payload: bytes,
        extensions: Mapping[str, str] | None = None,
        *,
        time: str | None = None,
    ) -> CloudEvent:
        """Build and send the event; returns it once the bus acknowledged. Raises PayloadTooLarge,
        BadJson or BusUnavailable. The static attributes come from the outcome's cached template
        unless `extensions` (protocol-specific attributes) are given; `time` (RFC 3339) replaces
        "now" when the protocol tells when the message was made (TTN)."""
        self.check_payload(payload, uplink.content_type)
        if extensions:
            app, sender, target = outcome.application, outcome.device, outcome.target
            origin = EventOrigin(app.name, app.uid, target.name, target.uid, sender.name, sender.uid, extra=extensions)
            template = event_template(origin, self.instance)
        else:
            template = outcome.event_template(self.instance)
        event = template.event(
            channel=uplink.channel, data=payload, content_type=uplink.content_type, data_schema=uplink.data_schema,
            time=time,
        )
        try:
            await self.bus.send(events_topic(outcome.application.name), event, key=event.attributes["partitionkey"])
        except BusUnavailable:
            _BUS_UNAVAILABLE.inc()
            raise
        except BaseException:
            _FAILED.inc()
            raise
        _PUBLISHED.inc()
        return event

    async def publish_connection(self, outcome: AuthOutcome, connected: bool) -> CloudEvent:
        """Send the `io.drogue.connection.v1` event of a device that connected (or disconnected)
        through a connection-oriented protocol; returns it once the bus acknowledged. Drogue sends
        these only for devices connected themselves, never for devices behind a gateway: the event
        is about `outcome.device`, which is also its sender. Raises BusUnavailable (or the bus's
        other errors); the caller decides what a lost connection event costs."""
        app, device = outcome.application, outcome.device
        if outcome.target == device:
            template = outcome.event_template(self.instance)
        else:
            origin = EventOrigin(app.name, app.uid, device.name, device.uid, device.name, device.uid)
            template = event_template(origin, self.instance)
        event = template.event(
            channel=CONNECTION_CHANNEL,
            data=_CONNECTION_DATA[connected],
            content_type="application/json",
            event_type=CONNECTION_TYPE,
        )
        try:
            await self.bus.send(events_topic(app.name), event, key=event.attributes["partitionkey"])
        except BusUnavailable:
            _CONNECTION_BUS_UNAVAILABLE.inc()
            raise
        except BaseException:
            _CONNECTION_FAILED.inc()
            raise
        _CONNECTION_PUBLISHED.inc()
        return event
