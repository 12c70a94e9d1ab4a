"""How a CloudEvent becomes the PUBLISH an application receives (the CloudEvents MQTT binding). Pure.

MQTT 5, binary content mode (the default): the payload is the event's data, `datacontenttype` is the
Content Type, and every other attribute is a user property (name, value), in the event's order.
Drogue's integration does the same when asked for `content-mode: binary`; it also drops
`dataschema` there (a side effect of the SDK's `take_data`), which Hawser keeps, as the binding asks.
Structured content mode (MQTT 3.1.1 always, MQTT 5 when the SUBSCRIBE has the user property
`content-mode: structured`): the payload is the structured JSON event, and in MQTT 5 the Content Type
`application/cloudevents+json; charset=utf-8` with the UTF-8 payload indicator, as Drogue sends it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from hawser.errors import BadRequest
from hawser.events import CloudEvent
from hawser.mqtt.packets import Properties, ProtocolVersion, Publish

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
#: The SUBSCRIBE user property choosing the content mode (Drogue's name and values).
CONTENT_MODE_PROPERTY = "content-mode"
#: Longest string MQTT can carry (a two-byte length).
_MAX_STRING = 0xFFFF


class ContentMode(enum.Enum):
    BINARY = "binary"
    STRUCTURED = "structured"


def content_mode(version: ProtocolVersion, user_properties: Iterable[tuple[str, str]]) -> ContentMode:
    """The content mode a SUBSCRIBE asks for; raises `BadRequest` for a value that is not one."""
    if version is not ProtocolVersion.V5:
        return ContentMode.STRUCTURED  # 3.1.1 has no user properties to carry attributes
    for name, value in user_properties:
        if name == CONTENT_MODE_PROPERTY:
            try:
                return ContentMode(value)
            except ValueError:
                raise BadRequest(f"unknown content-mode {value[:40]!r} (binary or structured)") from None
    return ContentMode.BINARY


def _carriable(text: str) -> bool:
    """Whether MQTT can carry the string (no U+0000, at most 65,535 bytes): an attribute that cannot
    is left out rather than fail the delivery again and again."""
    return "\x00" not in text and len(text.encode()) <= _MAX_STRING


def event_publish(
    event: CloudEvent,
    *,
    topic: str,
    version: ProtocolVersion,
    mode: ContentMode,
    qos: int = 0,
    packet_id: int | None = None,
    subscription_ids: tuple[int, ...] = (),
) -> Publish:
    """The PUBLISH carrying `event` to a subscriber of `topic`."""
    if version is not ProtocolVersion.V5:
        return Publish(topic, event.to_json().encode(), qos=qos, packet_id=packet_id)
    if mode is ContentMode.STRUCTURED:
        properties = Properties(content_type=STRUCTURED_CONTENT_TYPE, payload_format_indicator=1,
                                subscription_identifiers=subscription_ids)
        return Publish(topic, event.to_json().encode(), qos=qos, packet_id=packet_id, properties=properties)
    content_type = event.datacontenttype
    user_properties = tuple((name, value) for name, value in event.attributes.items()
                            if name != "datacontenttype" and _carriable(name) and _carriable(value))
    if content_type is None or not _carriable(content_type):
        content_type = None
    properties = Properties(content_type=content_type, user_properties=user_properties,
                            subscription_identifiers=subscription_ids)
    return Publish(topic, event.data, qos=qos, packet_id=packet_id, properties=properties)


__all__ = ["CONTENT_MODE_PROPERTY", "STRUCTURED_CONTENT_TYPE", "ContentMode", "content_mode", "event_publish"]
