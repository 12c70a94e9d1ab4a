"""The one ingest pipeline every device protocol calls: check the payload, build the CloudEvent with
every Drogue attribute, put it on the application's topic and return only once the bus holds it.

Nothing else in Hawser builds device events or sends them to the bus. The caller acknowledges the
device only after `publish` returned; any error it raises means the message was not taken.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from prometheus_client import Counter

from auth.devices import AuthOutcome
from hawser.bus.base import EventBus
from hawser.errors import BadJson, BusUnavailable, PayloadTooLarge
from hawser.events import CloudEvent, EventOrigin, events_topic, is_json_content_type, new_event

EVENTS = Counter("hawser_ingest_events", "Device events offered to the bus, by outcome.", ["outcome"])
_PUBLISHED = EVENTS.labels("published")
_TOO_LARGE = EVENTS.labels("too-large")
_BAD_JSON = EVENTS.labels("bad-json")
_BUS_UNAVAILABLE = EVENTS.labels("bus-unavailable")
_FAILED = EVENTS.labels("failed")

_NO_EXTENSIONS: Mapping[str, str] = {}


class Ingest:
    """Publishes authenticated devices' messages as CloudEvents on `events-<app>`."""

    def __init__(self, bus: EventBus, *, instance: str, max_payload_bytes: int) -> None:
        self.bus = bus
        self.instance = instance
        self.max_payload_bytes = max_payload_bytes

    def check_payload(self, payload: bytes, content_type: str | None) -> None:
        """Raise PayloadTooLarge or BadJson; adapters may call it before authenticating too."""
        if len(payload) > self.max_payload_bytes:
            _TOO_LARGE.inc()
            raise PayloadTooLarge(len(payload), self.max_payload_bytes)
        if is_json_content_type(content_type):
            try:
                json.loads(payload)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
                _BAD_JSON.inc()
                raise BadJson() from None

    async def publish(
        self,
        outcome: AuthOutcome,
        channel: str,
        payload: bytes,
        content_type: str | None,
        data_schema: str | None,
        extensions: Mapping[str, str] | None = None,
    ) -> CloudEvent:
        """Build and send the event; returns it once the bus acknowledged. Raises PayloadTooLarge,
        BadJson or BusUnavailable."""
        self.check_payload(payload, content_type)
        app, sender, target = outcome.application, outcome.device, outcome.target
        origin = EventOrigin(
            application=app.name,
            application_uid=app.uid,
            device=target.name,
            device_uid=target.uid,
            sender=sender.name,
            sender_uid=sender.uid,
            extra=extensions or _NO_EXTENSIONS,
        )
        event = new_event(
            origin,
            channel=channel,
            data=payload,
            instance=self.instance,
            content_type=content_type,
            data_schema=data_schema,
        )
        try:
            await self.bus.send(events_topic(app.name), event, key=event.attributes["partitionkey"])
        except BusUnavailable:
            _BUS_UNAVAILABLE.inc()
            raise
        except BaseException:
            _FAILED.inc()
            raise
        _PUBLISHED.inc()
        return event
