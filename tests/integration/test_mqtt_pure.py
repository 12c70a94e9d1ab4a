"""The MQTT integration's pure parts, from tables: topic filters, CONNECT credentials, the CloudEvent →
PUBLISH mapping, acknowledgement bookkeeping and the error table. No sockets, no bus."""

from __future__ import annotations

import json

import anyio
import pytest

from hawser.bus import Delivery
from hawser.errors import (
    BadCredentials,
    BadRequest,
    BusUnavailable,
    DeviceDisabled,
    HawserError,
    MissingCredentials,
    Overloaded,
    UnknownTopic,
)
from hawser.events import EventOrigin, new_event
from hawser.mqtt.packets import ProtocolVersion, Reason
from integration._credentials import TokenCredential
from integration._mqtt_acks import AckTracker
from integration._mqtt_credentials import credential_of
from integration._mqtt_events import STRUCTURED_CONTENT_TYPE, ContentMode, content_mode, event_publish
from integration._mqtt_flow import Window
from integration._mqtt_topics import AppFilter, CommandTopic, match_app_filter, match_command_topic
from integration.mqtt import reason_for

# --- topic filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("app/my-app", AppFilter("my-app", None, "app/my-app")),
        ("a/my-app", AppFilter("my-app", None, "a/my-app")),
        ("application/x1", AppFilter("x1", None, "application/x1")),
        ("$share/g1/app/my-app", AppFilter("my-app", "g1", "app/my-app")),
        ("$shared/g1/app/my-app", AppFilter("my-app", "g1", "app/my-app")),
        ("$share/G.r-o_u~p!/a/b", AppFilter("b", "G.r-o_u~p!", "a/b")),
    ],
)
def test_application_filters(topic_filter: str, expected: AppFilter) -> None:
    assert match_app_filter(topic_filter) == expected


@pytest.mark.parametrize(
    ("topic_filter", "reason"),
    [
        ("app/+", Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
        ("app/#", Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
        ("#", Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
        ("+/my-app", Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
        ("$share/g/app/+", Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
        ("app/x#", Reason.TOPIC_FILTER_INVALID),  # not a valid MQTT filter at all
        ("app/a+b", Reason.TOPIC_FILTER_INVALID),
        ("", Reason.TOPIC_FILTER_INVALID),
        ("app", Reason.TOPIC_FILTER_INVALID),
        ("app/x/y", Reason.TOPIC_FILTER_INVALID),
        ("events/x", Reason.TOPIC_FILTER_INVALID),
        ("command/inbox/#", Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
        ("$share//app/x", Reason.TOPIC_FILTER_INVALID),
        ("$share/g", Reason.TOPIC_FILTER_INVALID),
        ("$share/has space/app/x", Reason.TOPIC_FILTER_INVALID),
        ("$share/" + "g" * 201 + "/app/x", Reason.TOPIC_FILTER_INVALID),
        # Names that cannot be an application are refused like applications one may not read.
        ("app/", Reason.NOT_AUTHORIZED),
        ("app/UPPER", Reason.NOT_AUTHORIZED),
        ("app/a:b", Reason.NOT_AUTHORIZED),
        ("app/" + "a" * 64, Reason.NOT_AUTHORIZED),
    ],
)
def test_refused_filters(topic_filter: str, reason: Reason) -> None:
    assert match_app_filter(topic_filter) == reason


def test_groups_are_namespaced_by_application() -> None:
    shared = match_app_filter("$share/g1/app/my-app")
    plain = match_app_filter("app/my-app")
    assert isinstance(shared, AppFilter)
    assert isinstance(plain, AppFilter)
    assert shared.bus_group() == "mqtt:my-app:g1"
    assert plain.bus_group() is None
    one, two = match_app_filter("$share/b-c/app/a"), match_app_filter("$share/c/app/a-b")
    assert isinstance(one, AppFilter)
    assert isinstance(two, AppFilter)
    assert one.bus_group() != two.bus_group()


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("command/app/dev/set", CommandTopic("app", "dev", "set")),
        ("COMMAND/app/dev/set", CommandTopic("app", "dev", "set")),
        ("command/app/dev", None),
        ("command/app//set", None),
        ("command/app/dev/set/more", None),
        ("app/x", None),
        ("telemetry", None),
    ],
)
def test_command_topics(topic: str, expected: CommandTopic | None) -> None:
    assert match_command_topic(topic) == expected


# --- credentials -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password", "expected"),
    [
        ("tok", None, TokenCredential("tok")),
        ("tok", b"", TokenCredential("tok")),  # mosquitto_sub -u <token> -P ""
        (None, b"tok", TokenCredential("tok")),  # MQTT 5: a password alone
        ("", b"tok", TokenCredential("tok")),
        ("alice", b"tok", TokenCredential("tok", "alice")),
    ],
)
def test_credentials(username: str | None, password: bytes | None, expected: TokenCredential) -> None:
    assert credential_of(username, password) == expected


@pytest.mark.parametrize(("username", "password"), [(None, None), ("", None), ("", b""), (None, b"")])
def test_no_credentials(username: str | None, password: bytes | None) -> None:
    with pytest.raises(MissingCredentials):
        credential_of(username, password)


def test_a_password_that_is_not_text_is_bad_credentials() -> None:
    with pytest.raises(BadCredentials):
        credential_of("alice", b"\xff\xfe")


# --- events ----------------------------------------------------------------------------------------


def make_event(data: bytes = b'{"temp": 21}', content_type: str | None = "application/json",
               data_schema: str | None = None, **extra: str) -> Delivery:
    origin = EventOrigin("my-app", "app-uid", "dev 1", "dev-uid", "dev 1", "dev-uid", extra=extra)
    event = new_event(origin, channel="telemetry", data=data, instance="i1", content_type=content_type,
                      data_schema=data_schema)
    return Delivery("events-my-app", 0, 7, "my-app/dev%201", event, 0)


def test_mqtt5_binary_mode_carries_attributes_as_user_properties() -> None:
    event = make_event().event
    publish = event_publish(event, topic="app/my-app", version=ProtocolVersion.V5, mode=ContentMode.BINARY,
                            qos=1, packet_id=3, subscription_ids=(9,))
    assert (publish.topic, publish.payload, publish.qos, publish.packet_id) == (
        "app/my-app", b'{"temp": 21}', 1, 3)
    assert publish.properties.content_type == "application/json"
    assert publish.properties.subscription_identifiers == (9,)
    expected = [(k, v) for k, v in event.attributes.items() if k != "datacontenttype"]
    assert list(publish.properties.user_properties) == expected
    names = {name for name, _ in publish.properties.user_properties}
    assert {"specversion", "id", "source", "type", "subject", "time", "application", "applicationuid",
            "device", "deviceuid", "sender", "senderuid", "instance", "partitionkey"} <= names
    assert publish.properties.payload_format_indicator is None
    assert not publish.retain


def test_mqtt5_binary_mode_without_content_type_and_with_odd_attributes() -> None:
    event = make_event(b"\x00\x01", None, "urn:x", nul="a\x00b", huge="x" * 70000).event
    publish = event_publish(event, topic="a/my-app", version=ProtocolVersion.V5, mode=ContentMode.BINARY)
    assert publish.properties.content_type is None
    assert publish.payload == b"\x00\x01"
    properties = dict(publish.properties.user_properties)
    assert properties["dataschema"] == "urn:x", "kept (Drogue's SDK drops it; the CloudEvents binding keeps it)"
    assert "nul" not in properties, "MQTT strings cannot carry U+0000"
    assert "huge" not in properties, "nor more than 65,535 bytes"


def test_mqtt5_structured_mode_as_drogue() -> None:
    event = make_event().event
    publish = event_publish(event, topic="app/my-app", version=ProtocolVersion.V5, mode=ContentMode.STRUCTURED)
    assert json.loads(publish.payload) == {**event.attributes, "data": {"temp": 21}}
    assert publish.properties.content_type == STRUCTURED_CONTENT_TYPE
    assert publish.properties.payload_format_indicator == 1
    assert publish.properties.user_properties == ()


@pytest.mark.parametrize("mode", list(ContentMode))
def test_mqtt311_gets_structured_json(mode: ContentMode) -> None:
    event = make_event(b"hello", "text/plain").event
    publish = event_publish(event, topic="app/my-app", version=ProtocolVersion.V311, mode=mode)
    assert json.loads(publish.payload) == {**event.attributes, "data": "hello"}
    assert publish.properties.user_properties == ()


def test_content_mode_from_the_subscribe() -> None:
    v5, v311 = ProtocolVersion.V5, ProtocolVersion.V311
    assert content_mode(v5, ()) is ContentMode.BINARY
    assert content_mode(v5, [("other", "x"), ("content-mode", "structured")]) is ContentMode.STRUCTURED
    assert content_mode(v5, [("content-mode", "binary")]) is ContentMode.BINARY
    assert content_mode(v311, ()) is ContentMode.STRUCTURED
    with pytest.raises(BadRequest):
        content_mode(v5, [("content-mode", "protobuf")])


# --- acknowledgements ------------------------------------------------------------------------------


def delivery(offset: int, partition: int = 0) -> Delivery:
    return Delivery("events-x", partition, offset, None, make_event().event, 0)


def positions(deliveries: list[Delivery]) -> set[tuple[int, int]]:
    return {(d.partition, d.offset) for d in deliveries}


def test_the_offset_never_passes_an_unacknowledged_event() -> None:
    tracker = AckTracker(committing=True)
    for offset, packet_id in [(0, 1), (1, 2), (2, 3)]:
        tracker.sent(delivery(offset), packet_id)
    tracker.sent(delivery(5, partition=1), 4)
    assert tracker.inflight == 4
    assert tracker.take_commits() == []
    assert tracker.acked(2)
    assert tracker.take_commits() == [], "offset 0 is not acknowledged yet"
    assert tracker.acked(1)
    assert positions(tracker.take_commits()) == {(0, 1)}
    assert not tracker.acked(1), "twice"
    assert not tracker.acked(99), "never sent"
    assert tracker.acked(4)
    assert tracker.acked(3)
    assert positions(tracker.take_commits()) == {(0, 2), (1, 5)}
    assert tracker.inflight == 0


def test_done_at_once_deliveries_wait_behind_unacknowledged_ones() -> None:
    tracker = AckTracker(committing=True)
    tracker.sent(delivery(0))  # QoS 0 or skipped: done
    assert positions(tracker.take_commits()) == {(0, 0)}
    tracker.sent(delivery(1), 1)
    tracker.sent(delivery(2))  # skipped while 1 is in flight
    assert tracker.take_commits() == []
    tracker.acked(1)
    assert positions(tracker.take_commits()) == {(0, 2)}


def test_committed_deliveries_hold_no_payload() -> None:
    tracker = AckTracker(committing=True)
    tracker.sent(delivery(0), 1)
    tracker.acked(1)
    (committed,) = tracker.take_commits()
    assert committed.offset == 0
    assert committed.event.data == b""


def test_abandon_forgets_what_is_in_flight() -> None:
    tracker = AckTracker(committing=True)
    tracker.sent(delivery(0), 1)
    tracker.sent(delivery(1), 2)
    tracker.acked(1)
    assert tracker.abandon() == 1
    assert not tracker.acked(2)
    assert positions(tracker.take_commits()) == {(0, 0)}, "what was done before stays committable"


def test_without_a_group_only_packet_ids_are_kept() -> None:
    tracker = AckTracker(committing=False)
    tracker.sent(delivery(0), 1)
    tracker.sent(delivery(1))
    with pytest.raises(ValueError, match="in flight"):
        tracker.sent(delivery(2), 1)
    assert tracker.acked(1)
    assert tracker.take_commits() == []


async def test_a_window_waits_for_a_free_slot() -> None:
    window = Window(2)
    await window.take()
    await window.take()
    with anyio.move_on_after(0.05) as timed_out:
        await window.take()
    assert timed_out.cancelled_caught
    window.give()
    with anyio.fail_after(1):
        await window.take()
    assert window.used == 2


# --- the error table -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (BadCredentials(), Reason.BAD_USER_NAME_OR_PASSWORD),
        (MissingCredentials(), Reason.BAD_USER_NAME_OR_PASSWORD),
        (DeviceDisabled(), Reason.NOT_AUTHORIZED),
        (UnknownTopic(), Reason.NOT_AUTHORIZED),
        (BadRequest(), Reason.IMPLEMENTATION_SPECIFIC_ERROR),
        (BusUnavailable(), Reason.SERVER_UNAVAILABLE),
        (Overloaded(), Reason.SERVER_BUSY),
        (HawserError(), Reason.UNSPECIFIED_ERROR),
    ],
)
def test_error_table(error: HawserError, reason: Reason) -> None:
    assert reason_for(error) is reason
