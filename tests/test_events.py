"""The structured JSON form of a CloudEvent, which the WebSocket and MQTT integrations write."""

from __future__ import annotations

import json

from hawser.events import CloudEvent, EventOrigin, new_event

ORIGIN = EventOrigin("app", "app-uid", "dev", "dev-uid", "dev", "dev-uid")


def event(data: bytes, content_type: str) -> CloudEvent:
    return new_event(ORIGIN, channel="c", data=data, instance="i", content_type=content_type)


def test_json_data_is_inline_and_text_stays_unescaped() -> None:
    text = event('{"t": "22 °C"}'.encode(), "application/json").to_json()
    assert '"data":{"t":"22 °C"}' in text
    assert json.loads(text)["source"] == "drogue://app/dev"


def test_an_event_holding_a_lone_surrogate_still_encodes_to_utf8() -> None:
    """Ingest refuses such JSON now; an event stored before (or written by another producer) must
    not break every reader's stream: it is written with ASCII escapes instead."""
    stored = event(b'{"s": "\\ud800", "t": "\xc2\xb0"}', "application/json")
    text = stored.to_json()
    text.encode("utf-8")
    assert json.loads(text)["data"] == {"s": "\ud800", "t": "°"}
    assert "\\ud800" in text
