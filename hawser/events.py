"""The CloudEvent value and its two wire forms: Kafka binary mode and structured JSON.

Nothing here does I/O. The mapping is written out rather than delegated to the `cloudevents` SDK
because it runs once per message on the hot path; the test suite checks it against the SDK's own
Kafka binding so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

SPECVERSION = "1.0"
EVENT_TYPE = "io.drogue.event.v1"
CONNECTION_TYPE = "io.drogue.connection.v1"

#: Attributes every event has (CloudEvents core), in the order they are written.
CORE_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema")
#: Drogue's extension attributes.
EXTENSIONS = ("application", "applicationuid", "device", "deviceuid", "sender", "senderuid", "instance", "partitionkey")

_HEADER_PREFIX = "ce_"
_CORE = frozenset(CORE_ATTRIBUTES)


def encode_name(name: str) -> str:
    """Percent-encode every byte that is not alphanumeric, as Drogue's `NON_ALPHANUMERIC` set."""
    return quote(name, safe="")


def partition_key(application: str, device: str) -> str:
    """The Kafka key of a device's events: `<app>/<device>`, both percent-encoded."""
    return f"{encode_name(application)}/{encode_name(device)}"


def source_of(application: str, device: str) -> str:
    return f"drogue://{encode_name(application)}/{encode_name(device)}"


def new_event_id() -> str:
    """A random (version 4) UUID as text; `str(uuid.uuid4())` without building a UUID object,
    which is a measurable share of the per-message cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def now_rfc3339() -> str:
    """The time now as `2026-11-23T16:51:21.194636Z`. The date and time of day are formatted once per
    second: this runs for every message."""
    now = time.time()
    second = int(now)
    cached = _second
    if cached[0] != second:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        cached[0] = second
    return f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"


def is_json_content_type(content_type: str | None) -> bool:
    """`application/json`, `text/json` and any `+json` suffix, parameters ignored."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _is_text_content_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/")


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A CloudEvent with string attributes and opaque bytes as data.

    `attributes` always holds `specversion`, `id`, `source` and `type`. Values are strings, which is
    how Drogue writes them and how Kafka headers carry them.
    """

    attributes: Mapping[str, str]
    data: bytes = b""
    #: The template the event was made from, if any: its Kafka headers are encoded once, there.
    template: EventTemplate | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for required in ("specversion", "id", "source", "type"):
            if not self.attributes.get(required):
                raise ValueError(f"CloudEvent without {required!r}")

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def type(self) -> str:
        return self.attributes["type"]

    @property
    def datacontenttype(self) -> str | None:
        return self.attributes.get("datacontenttype")

    # --- Kafka binary content mode ---------------------------------------------------------------

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """Headers for binary mode: `ce_<attr>` for every attribute but the content type, which
        travels as the plain `content-type` header (CloudEvents Kafka binding, section 3.2)."""
        template = self.template
        if template is not None:
            return self._template_headers(template)
        headers: list[tuple[str, bytes]] = []
        for name, value in self.attributes.items():
            if name == "datacontenttype":
                headers.append(("content-type", value.encode()))
            else:
                headers.append((_HEADER_PREFIX + name, value.encode()))
        return headers

    def _template_headers(self, template: EventTemplate) -> list[tuple[str, bytes]]:
        """What `EventTemplate.event` sets per event, encoded now; the rest comes from the template."""
        attributes = self.attributes
        headers = [
            ("ce_id", attributes["id"].encode()),
            ("ce_type", attributes["type"].encode()),
            ("ce_subject", attributes["subject"].encode()),
            ("ce_time", attributes["time"].encode()),
        ]
        content_type = attributes.get("datacontenttype")
        if content_type:
            headers.append(("content-type", content_type.encode()))
        data_schema = attributes.get("dataschema")
        if data_schema:
            headers.append(("ce_dataschema", data_schema.encode()))
        headers.extend(template.kafka_headers)
        return headers

    @classmethod
    def from_kafka(cls, headers: Sequence[tuple[str, bytes]], value: bytes | None) -> CloudEvent:
        attributes: dict[str, str] = {}
        for name, raw in headers:
            lowered = name.lower()
            if lowered.startswith(_HEADER_PREFIX):
                attributes[lowered[len(_HEADER_PREFIX) :]] = raw.decode()
            elif lowered == "content-type":
                attributes["datacontenttype"] = raw.decode()
        return cls(attributes, value or b"")

    # --- structured JSON ---------------------------------------------------------------------------

    def to_structured(self) -> dict[str, Any]:
        """The JSON event format: JSON data inline as `data`, text as a string, else `data_base64`."""
        doc: dict[str, Any] = dict(self.attributes)
        if not self.data:
            return doc
        content_type = self.datacontenttype
        if is_json_content_type(content_type):
            try:
                doc["data"] = json.loads(self.data)
                return doc
            except ValueError:
                pass
        if _is_text_content_type(content_type):
            try:
                doc["data"] = self.data.decode()
                return doc
            except UnicodeDecodeError:
                pass
        doc["data_base64"] = base64.b64encode(self.data).decode()
        return doc

    def to_json(self) -> str:
        """The structured event as JSON text that always encodes to UTF-8: an event stored before
        lone surrogates were refused (or from another producer) is written with ASCII escapes rather
        than breaking every reader's stream."""
        structured = self.to_structured()
        text = json.dumps(structured, separators=(",", ":"), ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(structured, separators=(",", ":"))
        return text


@dataclass(frozen=True, slots=True)
class EventOrigin:
    """Who an event is about and who sent it (a gateway may send for another device)."""

    application: str
    application_uid: str
    device: str
    device_uid: str
    sender: str
    sender_uid: str
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventTemplate:
    """What every event of one origin on one instance shares, computed once (`event_template`):
    the `source` and the extension attributes. `event` adds only what changes per message."""

    source: str
    extensions: Mapping[str, str]
    #: `ce_specversion`, `ce_source` and every extension as Kafka headers, encoded once.
    kafka_headers: tuple[tuple[str, bytes], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        static = {"specversion": SPECVERSION, "source": self.source, **self.extensions}
        headers = tuple((_HEADER_PREFIX + name, value.encode()) for name, value in static.items())
        object.__setattr__(self, "kafka_headers", headers)

    def event(
        self,
        *,
        channel: str,
        data: bytes,
        content_type: str | None = None,
        data_schema: str | None = None,
        event_type: str = EVENT_TYPE,
        time: str | None = None,
    ) -> CloudEvent:
        """One event of this origin; `time` (RFC 3339) when the protocol says when the message was
        made (TTN's `received_at`), else now."""
        attributes: dict[str, str] = {
            "specversion": SPECVERSION,
            "id": new_event_id(),
            "source": self.source,
            "type": event_type,
            "subject": channel,
            "time": time or now_rfc3339(),
        }
        if content_type:
            attributes["datacontenttype"] = content_type
        if data_schema:
            attributes["dataschema"] = data_schema
        attributes.update(self.extensions)
        return CloudEvent(attributes, data, self)


def event_template(origin: EventOrigin, instance: str) -> EventTemplate:
    """The static part of `origin`'s events; extra attributes never replace a core or Drogue one."""
    extensions: dict[str, str] = {
        "application": origin.application,
        "applicationuid": origin.application_uid,
        "device": origin.device,
        "deviceuid": origin.device_uid,
        "sender": origin.sender,
        "senderuid": origin.sender_uid,
        "instance": instance,
        "partitionkey": partition_key(origin.application, origin.device),
    }
    for name, value in origin.extra.items():
        if name not in _CORE:
            extensions.setdefault(name, value)
    return EventTemplate(source_of(origin.application, origin.device), extensions)


def new_event(
    origin: EventOrigin,
    *,
    channel: str,
    data: bytes,
    instance: str,
    content_type: str | None = None,
    data_schema: str | None = None,
    event_type: str = EVENT_TYPE,
) -> CloudEvent:
    """Build an event with every attribute and extension Drogue writes."""
    return event_template(origin, instance).event(
        channel=channel, data=data, content_type=content_type, data_schema=data_schema, event_type=event_type
    )


def events_topic(application: str) -> str:
    """The Kafka topic of an application's events. Application names are DNS labels, so safe."""
    return f"events-{application}"


COMMANDS_TOPIC = "iot-commands"
