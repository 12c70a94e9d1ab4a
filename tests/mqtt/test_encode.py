"""The encoder against byte vectors worked out from the spec, the 3.1.1 reason mappings, and the values
a version cannot express (ValueError)."""

from __future__ import annotations

import pytest

from hawser.mqtt import (
    MAX_UINT16,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    ProtocolVersion,
    PubAck,
    Publish,
    PubRec,
    PubRel,
    Reason,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)

V311, V5 = ProtocolVersion.V311, ProtocolVersion.V5

VECTORS: list[tuple[str, Packet, ProtocolVersion, bytes]] = [
    ("connect-311", Connect("abc", V311, 60), V311,
     b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc"),
    ("connect-v5-full", Connect("c", V5, 10, False, "u", b"p", Will("w", b"m", 1, True),
                                Properties(receive_maximum=5)), V5,
     b"\x10\x1e\x00\x04MQTT\x05\xec\x00\x0a\x03\x21\x00\x05\x00\x01c\x00\x00\x01w\x00\x01m\x00\x01u\x00\x01p"),
    ("connack-311", ConnAck(True), V311, b"\x20\x02\x01\x00"),
    ("connack-v5", ConnAck(reason=Reason.NOT_AUTHORIZED), V5, b"\x20\x03\x00\x87\x00"),
    ("publish-qos0", Publish("a/b", b"hi"), V311, b"\x30\x07\x00\x03a/bhi"),
    ("publish-qos1-v5", Publish("t", b"x", 1, True, True, 10), V5, b"\x3b\x07\x00\x01t\x00\x0a\x00x"),
    ("publish-v5-props", Publish("t", b"", properties=Properties(content_type="j", topic_alias=2)), V5,
     b"\x30\x0b\x00\x01t\x07\x03\x00\x01j\x23\x00\x02"),
    ("publish-long", Publish("t", b"x" * 200), V311, b"\x30\xcb\x01\x00\x01t" + b"x" * 200),
    ("puback", PubAck(7), V311, b"\x40\x02\x00\x07"),
    ("puback-v5-success", PubAck(7), V5, b"\x40\x02\x00\x07"),
    ("puback-v5-reason", PubAck(7, Reason.NO_MATCHING_SUBSCRIBERS), V5, b"\x40\x03\x00\x07\x10"),
    ("puback-v5-props", PubAck(7, properties=Properties(reason_string="r")), V5,
     b"\x40\x08\x00\x07\x00\x04\x1f\x00\x01r"),
    ("pubrel", PubRel(1), V311, b"\x62\x02\x00\x01"),
    ("subscribe-311", Subscribe(1, (SubscriptionRequest("a/#", 1),)), V311, b"\x82\x08\x00\x01\x00\x03a/#\x01"),
    ("subscribe-v5", Subscribe(1, (SubscriptionRequest("a", 2, True, True, 2),),
                               Properties(subscription_identifiers=(300,))), V5,
     b"\x82\x0a\x00\x01\x03\x0b\xac\x02\x00\x01a\x2e"),
    ("suback-311", SubAck(1, (Reason.GRANTED_QOS_1, Reason.NOT_AUTHORIZED)), V311, b"\x90\x04\x00\x01\x01\x80"),
    ("suback-v5", SubAck(1, (Reason.GRANTED_QOS_1, Reason.NOT_AUTHORIZED)), V5, b"\x90\x05\x00\x01\x00\x01\x87"),
    ("unsubscribe", Unsubscribe(2, ("a", "b")), V311, b"\xa2\x08\x00\x02\x00\x01a\x00\x01b"),
    ("unsuback-311", UnsubAck(2, (Reason.SUCCESS,)), V311, b"\xb0\x02\x00\x02"),
    ("unsuback-v5", UnsubAck(2, (Reason.NO_SUBSCRIPTION_EXISTED,)), V5, b"\xb0\x04\x00\x02\x00\x11"),
    ("pingreq", PingReq(), V5, b"\xc0\x00"),
    ("pingresp", PingResp(), V311, b"\xd0\x00"),
    ("disconnect-311", Disconnect(Reason.SERVER_SHUTTING_DOWN), V311, b"\xe0\x00"),
    ("disconnect-v5", Disconnect(), V5, b"\xe0\x00"),
    ("disconnect-v5-reason", Disconnect(Reason.SERVER_SHUTTING_DOWN), V5, b"\xe0\x01\x8b"),
    ("auth", Auth(), V5, b"\xf0\x00"),
    ("auth-continue", Auth(Reason.CONTINUE_AUTHENTICATION, Properties(authentication_method="m")), V5,
     b"\xf0\x06\x18\x04\x15\x00\x01m"),
]


@pytest.mark.parametrize(("packet", "version", "wire"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_vectors(packet: Packet, version: ProtocolVersion, wire: bytes) -> None:
    assert encode(packet, version) == wire


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (Reason.SUCCESS, 0), (Reason.UNSUPPORTED_PROTOCOL_VERSION, 1), (Reason.CLIENT_IDENTIFIER_NOT_VALID, 2),
        (Reason.SERVER_UNAVAILABLE, 3), (Reason.SERVER_BUSY, 3), (Reason.UNSPECIFIED_ERROR, 3),
        (Reason.QUOTA_EXCEEDED, 3), (Reason.BAD_USER_NAME_OR_PASSWORD, 4), (Reason.NOT_AUTHORIZED, 5),
        (Reason.BANNED, 5),
    ],
)
def test_311_connack_return_codes(reason: Reason, code: int) -> None:
    assert encode(ConnAck(reason=reason), V311) == bytes([0x20, 2, 0, code])


def test_311_drops_properties() -> None:
    props = Properties(reason_string="why", user_properties=(("a", "b"),))
    assert encode(PubAck(3, properties=props), V311) == b"\x40\x02\x00\x03"
    assert encode(Publish("t", b"", properties=Properties(content_type="x")), V311) == b"\x30\x03\x00\x01t"


LONG = "x" * (MAX_UINT16 + 1)
INEXPRESSIBLE: list[tuple[str, Packet, ProtocolVersion]] = [
    ("auth-in-311", Auth(), V311),
    ("refusing-puback-in-311", PubAck(1, Reason.NOT_AUTHORIZED), V311),
    ("refusing-pubrec-in-311", PubRec(1, Reason.QUOTA_EXCEEDED), V311),
    ("puback-with-disconnect-reason", PubAck(1, Reason.PACKET_TOO_LARGE), V5),
    ("connack-with-disconnect-reason", ConnAck(reason=Reason.SESSION_TAKEN_OVER), V5),
    ("connack-311-not-an-error", ConnAck(reason=Reason.GRANTED_QOS_1), V311),
    ("connack-present-and-refused", ConnAck(True, Reason.NOT_AUTHORIZED), V5),
    ("topic-too-long", Publish(LONG), V5),
    ("topic-with-nul", Publish("a\x00b"), V5),
    ("topic-with-surrogate", Publish("a\ud800"), V311),
    ("binary-too-long", Connect("c", V5, password=b"x" * (MAX_UINT16 + 1)), V5),
    ("property-not-allowed", Connect("c", V5, properties=Properties(topic_alias=1)), V5),
    ("property-out-of-range", Connect("c", V5, properties=Properties(receive_maximum=70000)), V5),
    ("receive-maximum-0", Connect("c", V5, properties=Properties(receive_maximum=0)), V5),
    ("boolean-property-2", Publish("t", properties=Properties(payload_format_indicator=2)), V5),
    ("two-subscription-ids-in-subscribe",
     Subscribe(1, (SubscriptionRequest("a"),), Properties(subscription_identifiers=(1, 2))), V5),
    ("suback-without-reasons", SubAck(1, ()), V311),
    ("unsuback-v5-without-reasons", UnsubAck(1), V5),
    ("password-without-user-311", Connect("c", V311, password=b"p"), V311),
    ("subscription-options-311", Subscribe(1, (SubscriptionRequest("a", no_local=True),)), V311),
    ("auth-without-method", Auth(Reason.CONTINUE_AUTHENTICATION), V5),
]


@pytest.mark.parametrize(("packet", "version"), [v[1:] for v in INEXPRESSIBLE], ids=[v[0] for v in INEXPRESSIBLE])
def test_inexpressible(packet: Packet, version: ProtocolVersion) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies, the class is the contract
        encode(packet, version)


def test_not_a_packet() -> None:
    with pytest.raises(TypeError):
        encode("PUBLISH", V5)  # type: ignore[arg-type]
