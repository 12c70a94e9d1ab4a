"""The pure decisions of the MQTT device endpoint: publish topics, command inbox filters, user
properties as CloudEvent extensions, the credentials of a CONNECT, its refusals and the error table."""

from __future__ import annotations

import pytest

from auth.devices import DeviceCredentials
from command.sessions import InboxFilter, InboxScope
from endpoints._mqtt_connect import SERVER_FEATURES, connack_properties, connect_credentials, connect_refusal
from endpoints._mqtt_replies import MQTT_REASON, connack_reason, puback_reason, reason_for
from endpoints._mqtt_topics import match_inbox_filter, match_publish_topic, publish_uplink
from hawser import errors
from hawser.mqtt.packets import Connect, Properties, ProtocolVersion, Publish, Reason

V3, V5 = ProtocolVersion.V311, ProtocolVersion.V5


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("telemetry", ("telemetry", None)),
        ("telemetry/th1", ("telemetry", "th1")),
        ("telemetry/th/1", ("telemetry", "th/1")),
        ("t/ü", ("t", "ü")),
        ("", None),
        ("/telemetry", None),
        ("telemetry/", None),
        ("telemetry//x", None),
        ("telemetry/x/", None),
        ("/", None),
        ("//", None),
    ],
)
def test_match_publish_topic(topic: str, expected: tuple[str, str | None] | None) -> None:
    assert match_publish_topic(topic) == expected


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("command/inbox/#", InboxFilter(InboxScope.ALL)),
        ("command/inbox/+/#", InboxFilter(InboxScope.ALL)),  # Drogue reads it as `#`
        ("command/inbox//#", InboxFilter(InboxScope.SELF)),
        ("command/inbox/th1/#", InboxFilter(InboxScope.DEVICE, "th1")),
        ("command/inbox/th/1/#", InboxFilter(InboxScope.DEVICE, "th/1")),
        ("command/inbox/#/x", None),
        ("command/inbox/th1/+", None),
        ("command/inbox/th1/set", None),
        ("command/inbox/+/x/#", None),
        ("command/inbox/a//#", None),
        ("command/inbox", None),
        ("command/inbox/", None),
        ("command/#", None),
        ("#", None),
        ("foo/#", None),
        ("app/x", None),
    ],
)
def test_match_inbox_filter(topic_filter: str, expected: InboxFilter | None) -> None:
    assert match_inbox_filter(topic_filter) == expected


def test_publish_uplink_takes_content_type_and_cloudevent_named_user_properties() -> None:
    properties = Properties(
        content_type="application/json",
        user_properties=(("trace", "1"), ("trace", "2"), ("traceId", "no"), ("x-y", "no"), ("data", "no"),
                         ("a" * 20, "ok"), ("a" * 21, "no"), ("", "no"), ("device", "kept, but never wins")),
        payload_format_indicator=1, response_topic="r", correlation_data=b"c", message_expiry_interval=5,
    )
    uplink, extensions = publish_uplink(Publish("temp/th1", b"{}", properties=properties))
    assert (uplink.channel, uplink.as_device, uplink.content_type) == ("temp", "th1", "application/json")
    assert uplink.data_schema is None
    assert uplink.command_timeout is None
    assert extensions == {"trace": "1", "a" * 20: "ok", "device": "kept, but never wins"}


@pytest.mark.parametrize("topic", ["/t", "t/", "a//b", "bad channel", "t/bad\x01device"])
def test_publish_uplink_refuses_bad_topics_as_invalid_names(topic: str) -> None:
    with pytest.raises(errors.InvalidName):
        publish_uplink(Publish(topic))


def connect(username: str | None, password: bytes | None, client_id: str = "c", **kwargs: object) -> Connect:
    return Connect(client_id, username=username, password=password, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (connect("d@app", b"pw"), DeviceCredentials("app", "d", "pw")),
        (connect("d@x@app", b"pw"), DeviceCredentials("app", "d@x", "pw")),
        (connect("d%2F1@app", b"pw"), DeviceCredentials("app", "d/1", "pw")),  # percent-decoded, as Drogue
        (connect("d@app", "pässword".encode()), DeviceCredentials("app", "d", "pässword")),
        (connect("d@app", b""), DeviceCredentials("app", "d", "")),
        # Drogue's UsernamePassword: user name without `@`, the client id names the device.
        (connect("user1", b"pw", client_id="d@app"), DeviceCredentials("app", "user1", "pw", device="d")),
    ],
)
def test_connect_credentials(packet: Connect, expected: DeviceCredentials) -> None:
    assert connect_credentials(packet) == expected


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (connect(None, None), errors.MissingCredentials),
        (connect("d@app", None), errors.BadCredentials),
        (connect(None, b"pw"), errors.BadCredentials),
        (connect("d@app", b"\xff\xfe"), errors.BadCredentials),
        (connect("d@app", b"x" * 1025), errors.BadCredentials),
        (connect("user1", b"pw", client_id="no-at"), errors.BadCredentials),
        (connect("@app", b"pw"), errors.BadCredentials),
        (connect("d@", b"pw"), errors.BadCredentials),
        (connect("d\x00@app", b"pw"), errors.BadCredentials),
        (connect("us\x01er", b"pw", client_id="d@app"), errors.BadCredentials),
    ],
)
def test_connect_credentials_refused(packet: Connect, error: type[Exception]) -> None:
    with pytest.raises(error):
        connect_credentials(packet)


def test_connect_refusals() -> None:
    assert connect_refusal(Connect("c", V3, clean_start=False)) == (
        Reason.CLIENT_IDENTIFIER_NOT_VALID, "persistent sessions are not supported: use a clean session")
    assert connect_refusal(Connect("c", V3)) is None
    assert connect_refusal(Connect("c", V5, clean_start=False)) is None
    refusal = connect_refusal(Connect("c", V5, properties=Properties(authentication_method="SCRAM-SHA-1")))
    assert refusal is not None
    assert refusal[0] is Reason.BAD_AUTHENTICATION_METHOD


def test_connack_properties_never_promise_a_session() -> None:
    assert connack_properties(Connect("c", V5)) == SERVER_FEATURES
    assert connack_properties(Connect("c", V5, properties=Properties(session_expiry_interval=0))) == SERVER_FEATURES
    for clean in (True, False):
        asked = Connect("c", V5, clean_start=clean, properties=Properties(session_expiry_interval=3600))
        answer = connack_properties(asked)
        assert answer.session_expiry_interval == 0
        assert answer.shared_subscription_available == 0
        assert answer.subscription_identifier_available == 0


@pytest.mark.parametrize(
    ("error", "connack", "puback"),
    [
        (errors.BadCredentials(), Reason.BAD_USER_NAME_OR_PASSWORD, Reason.NOT_AUTHORIZED),
        (errors.MissingCredentials(), Reason.BAD_USER_NAME_OR_PASSWORD, Reason.NOT_AUTHORIZED),
        (errors.DeviceDisabled(), Reason.NOT_AUTHORIZED, Reason.NOT_AUTHORIZED),
        (errors.ApplicationDisabled(), Reason.NOT_AUTHORIZED, Reason.NOT_AUTHORIZED),
        (errors.GatewayNotAllowed(), Reason.NOT_AUTHORIZED, Reason.NOT_AUTHORIZED),
        (errors.UnknownTopic(), Reason.NOT_AUTHORIZED, Reason.NOT_AUTHORIZED),
        (errors.BadJson(), Reason.PAYLOAD_FORMAT_INVALID, Reason.PAYLOAD_FORMAT_INVALID),
        (errors.InvalidName(), Reason.TOPIC_NAME_INVALID, Reason.TOPIC_NAME_INVALID),
        (errors.BadRequest(), Reason.IMPLEMENTATION_SPECIFIC_ERROR, Reason.IMPLEMENTATION_SPECIFIC_ERROR),
        (errors.PayloadTooLarge(10, 5), Reason.QUOTA_EXCEEDED, Reason.QUOTA_EXCEEDED),
        (errors.BusUnavailable(), Reason.SERVER_UNAVAILABLE, Reason.UNSPECIFIED_ERROR),
        (errors.Overloaded(), Reason.SERVER_BUSY, Reason.UNSPECIFIED_ERROR),
        (errors.Conflict(), Reason.UNSPECIFIED_ERROR, Reason.UNSPECIFIED_ERROR),
        (RuntimeError("bug"), Reason.UNSPECIFIED_ERROR, Reason.UNSPECIFIED_ERROR),
    ],
)
def test_error_table(error: Exception, connack: Reason, puback: Reason) -> None:
    assert connack_reason(error) is connack
    assert puback_reason(error) is puback


def test_every_table_entry_is_an_error_reason() -> None:
    assert all(reason.is_error for reason in MQTT_REASON.values())
    assert reason_for(errors.HawserError()) is Reason.UNSPECIFIED_ERROR
