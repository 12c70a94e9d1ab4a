"""The Things Network webhook documents (v3 `ApplicationUp` JSON, v2 HTTP integration uplink) read into
one frozen `TtnMessage`. Nothing here does I/O. Not strict JSON (as Drogue's serde_json reads TTN: no NaN,
no lone surrogate, no repeated name) raises BadJson (406; Drogue says 400, TTN treats any non-2xx alike),
the wrong shape BadRequest (400). TTN v3 omits zero values (proto3): a missing `f_port`, `f_cnt`
or `frm_payload` means 0 or empty, as Drogue's `drogue-ttn` reads it."""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hawser.errors import BadJson, BadRequest

#: v3 message kinds (the one `ApplicationUp` field a document carries), uplink first.
UPLINK = "uplink_message"
V3_KINDS = (
    UPLINK, "uplink_normalized", "join_accept", "downlink_ack", "downlink_nack", "downlink_sent",
    "downlink_failed", "downlink_queued", "downlink_queue_invalidated", "location_solved", "service_data",
)
#: `spec.ttn.payload` values; anything else (or nothing) means FULL, as Drogue.
RAW, FIELDS, FULL = "raw", "fields", "full"
JSON_TYPE, OCTET_STREAM = "application/json", "application/octet-stream"

_MAX_TEXT = 256  # longest id, EUI or address carried into an extension
_MAX_METRIC = 1e9  # RSSI / SNR beyond this are not measurements
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # control characters
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how a surrogate gets into JSON text
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


@dataclass(frozen=True, slots=True)
class TtnMessage:
    """One webhook call: which device it is about and what it carries."""

    kind: str
    #: The TTN end device id: the device Hawser publishes for.
    device_id: str
    #: `f_port` (uplinks only).
    port: int | None
    #: When TTN received it, RFC 3339 in UTC; None when the document does not say.
    time: str | None
    #: The decoded `frm_payload` / `payload_raw` (uplinks only).
    raw: bytes
    #: `decoded_payload` / `payload_fields` as compact JSON; None when absent.
    decoded: bytes | None
    #: The webhook body, byte for byte.
    document: bytes = field(repr=False)
    #: CloudEvent extension attributes (lowercase alphanumeric names, text values).
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_uplink(self) -> bool:
        return self.kind == UPLINK

    @property
    def channel(self) -> str:
        """The event's channel: the port of an uplink in decimal, else the message kind."""
        return str(self.port) if self.is_uplink else self.kind


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _unique(members: list[tuple[str, Any]]) -> dict[str, Any]:
    # Python keeps the last of two equal names, other readers of the `full` document the first: a
    # second `end_device_ids` would make them see another device than the event names.
    document = dict(members)
    if len(document) != len(members):
        raise ValueError("a JSON object repeats a member name")
    return document


# Strict JSON as serde_json reads it (Drogue), the rules of `endpoints.ingest.check_json` and more.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite, object_pairs_hook=_unique)


def load_object(body: bytes) -> dict[str, Any]:
    """The JSON object of a webhook body: BadJson unless strict JSON in UTF-8 (too deep counts as
    not JSON; so does an integer of more digits than Python reads, a repeated member name, and an
    escaped lone surrogate, which no UTF-8 event can carry), BadRequest unless an object."""
    try:
        text = body.decode("utf-8")
        document = _DECODER.decode(text)
        if _SURROGATE_ESCAPE.search(text):  # rare (escaped emoji): then check every string is text
            json.dumps(document, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise BadJson("the webhook body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("a TTN webhook body is a JSON object")
    return document


# --- typed field readers: each raises BadRequest naming the field -------------------------------


def _object(value: object, what: str, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _text(value: object, what: str) -> str | None:
    """An optional string fit for an extension attribute (absent or empty: None)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    if len(value) > _MAX_TEXT or _BAD_TEXT.search(value):
        raise BadRequest(f"{what} is too long or holds control characters")
    return value


def _required_text(value: object, what: str) -> str:
    text = _text(value, what)
    if text is None:
        raise BadRequest(f"{what} is missing")
    return text


def _integer(value: object, what: str, *, low: int, high: int, default: int | None = None) -> int:
    """An integer in [low, high]; `default` when absent (TTN v3 omits zeros), else BadRequest."""
    if value is None:
        if default is None:
            raise BadRequest(f"{what} is missing")
        return default
    if type(value) is not int:  # bool is an int subclass; 5.0 is not an integer either (serde)
        raise BadRequest(f"{what} must be an integer")
    if not low <= value <= high:
        raise BadRequest(f"{what} must be between {low} and {high}")
    return value


def _flag(value: object, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{what} must be true or false")
    return value


def _metric(value: object, what: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > _MAX_METRIC:
        raise BadRequest(f"{what} must be a number")
    return value


def _base64(value: object, what: str) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a base64 string")
    try:
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadRequest(f"{what} is not valid base64") from None


def _compact_json(value: Any) -> bytes:
    """`value`, a part of what `load_object` read (so all text, and less deep than the document it
    decoded from the same stack depth), as serde_json's compact text in UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def normalise_time(value: object, what: str) -> str | None:
    """An RFC 3339 timestamp (at most nanoseconds, as TTN writes them) in UTC with a `Z`, keeping
    the fraction as given; None when absent; BadRequest when not such a time."""
    if value is None or value == "":
        return None
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BadRequest(f"{what} is not an RFC 3339 time")
    year, month, day, hour, minute, second, fraction, sign, off_hour, off_minute = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
        if sign is not None:
            if int(off_hour) > 23 or int(off_minute) > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=int(off_hour), minutes=int(off_minute))
            moment = moment - offset if sign == "+" else moment + offset
    except (ValueError, OverflowError):
        raise BadRequest(f"{what} is not an RFC 3339 time") from None
    return f"{moment.isoformat()}{fraction or ''}Z"  # isoformat writes the year in four digits, as RFC 3339


_Heard = tuple[str | None, int | float | None, int | float | None]  # gateway id, RSSI, SNR


def _best_gateway(value: object, what: str, read: Callable[[dict[str, Any]], _Heard]) -> dict[str, str]:
    """`lorawangateway`, `lorawanrssi`, `lorawansnr` of the gateway in the list `value` that heard the
    uplink best: the highest SNR, then the highest RSSI (one without SNR ranks below those with one)."""
    if not isinstance(value, list | None):
        raise BadRequest(f"{what} must be a list")
    heard = [read(_object(item, f"{what}[]", required=True)) for item in value or ()]
    if not heard:
        return {}
    low = -math.inf  # a gateway without SNR (or RSSI) ranks below every one with it
    gateway, rssi, snr = max(heard, key=lambda g: (low if g[2] is None else g[2], low if g[1] is None else g[1]))
    found = {"lorawangateway": gateway, "lorawanrssi": rssi, "lorawansnr": snr}
    # Numbers as the document wrote them: -35 stays "-35", 5.2 stays "5.2".
    return {name: v if isinstance(v, str) else json.dumps(v) for name, v in found.items() if v is not None}


def _v3_heard(entry: dict[str, Any]) -> _Heard:
    ids = _object(entry.get("gateway_ids"), "rx_metadata[].gateway_ids")
    rssi = _metric(entry.get("rssi"), "rx_metadata[].rssi")
    channel_rssi = _metric(entry.get("channel_rssi"), "rx_metadata[].channel_rssi")
    return (
        _text(ids.get("gateway_id"), "rx_metadata[].gateway_ids.gateway_id"),
        rssi if rssi is not None else channel_rssi,
        _metric(entry.get("snr"), "rx_metadata[].snr"),
    )


def _v2_heard(entry: dict[str, Any]) -> _Heard:
    return (
        _text(entry.get("gtw_id"), "metadata.gateways[].gtw_id"),
        _metric(entry.get("rssi"), "metadata.gateways[].rssi"),
        _metric(entry.get("snr"), "metadata.gateways[].snr"),
    )


def parse_v3(body: bytes) -> TtnMessage:
    """A TTN v3 (The Things Stack) webhook body in the JSON format."""
    document = load_object(body)
    ids = _object(document.get("end_device_ids"), "end_device_ids", required=True)
    device_id = _required_text(ids.get("device_id"), "end_device_ids.device_id")
    extensions: dict[str, str] = {}
    if (dev_addr := _text(ids.get("dev_addr"), "end_device_ids.dev_addr")) is not None:
        extensions["hwaddr"] = dev_addr  # Drogue's name for the v3 device address
    if (dev_eui := _text(ids.get("dev_eui"), "end_device_ids.dev_eui")) is not None:
        extensions["lorawandeveui"] = dev_eui
    received_at = normalise_time(document.get("received_at"), "received_at")
    kinds = [kind for kind in V3_KINDS if kind in document]
    if len(kinds) != 1:
        raise BadRequest(f"expected exactly one of {', '.join(V3_KINDS)}")
    kind = kinds[0]
    content = _object(document[kind], kind, required=True)
    if kind != UPLINK:
        return TtnMessage(kind, device_id, None, received_at, b"", None, body, extensions)
    port = _integer(content.get("f_port"), "uplink_message.f_port", low=0, high=255, default=0)
    counter = _integer(content.get("f_cnt"), "uplink_message.f_cnt", low=0, high=2**32 - 1, default=0)
    raw = _base64(content.get("frm_payload"), "uplink_message.frm_payload")
    decoded = content.get("decoded_payload")
    # Drogue stamps the Network Server's reception time, falling back here on the message's own.
    time = normalise_time(content.get("received_at"), "uplink_message.received_at") or received_at
    extensions |= {"lorawanport": str(port), "lorawanfcnt": str(counter)}
    extensions |= _best_gateway(content.get("rx_metadata"), "uplink_message.rx_metadata", _v3_heard)
    return TtnMessage(
        UPLINK, device_id, port, time, raw,
        None if decoded is None else _compact_json(decoded), body, extensions,
    )


def parse_v2(body: bytes) -> TtnMessage:
    """A TTN v2 HTTP integration uplink (v2 sends nothing else)."""
    document = load_object(body)
    device_id = _required_text(document.get("dev_id"), "dev_id")
    port = _integer(document.get("port"), "port", low=0, high=255)  # v2 always writes it, even 0
    counter = None if (count := document.get("counter")) is None else _integer(count, "counter", low=0, high=2**32 - 1)
    retry = _flag(document.get("is_retry"), "is_retry")
    _flag(document.get("confirmed"), "confirmed")
    raw = _base64(document.get("payload_raw"), "payload_raw")
    fields = document.get("payload_fields")
    metadata = _object(document.get("metadata"), "metadata")
    extensions = {"lorawanport": str(port), "lorawanretry": "true" if retry else "false"}
    if (serial := _text(document.get("hardware_serial"), "hardware_serial")) is not None:
        extensions["hwaddr"] = extensions["lorawandeveui"] = serial  # v2's serial is the DevEUI
    if counter is not None:
        extensions["lorawanfcnt"] = str(counter)
    extensions |= _best_gateway(metadata.get("gateways"), "metadata.gateways", _v2_heard)
    return TtnMessage(
        UPLINK, device_id, port, normalise_time(metadata.get("time"), "metadata.time"), raw,
        None if fields is None else _compact_json(fields), body, extensions,
    )


__all__ = [
    "FIELDS", "FULL", "JSON_TYPE", "OCTET_STREAM", "RAW", "UPLINK", "V3_KINDS", "TtnMessage", "load_object",
    "normalise_time", "parse_v2", "parse_v3",
]
