"""Bytes no MQTT peer may send, each with the exact error class and reason the decoder must raise."""

from __future__ import annotations

import pytest

from hawser.mqtt import (
    Auth,
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    MalformedPacket,
    Packet,
    PacketTooLarge,
    PingReq,
    Properties,
    ProtocolError,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    Role,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
    encode,
)
from tests.mqtt.strategies import ALLOWED

V311, V5 = ProtocolVersion.V311, ProtocolVersion.V5
C, S = Role.CLIENT, Role.SERVER
MAL, PROTO = Reason.MALFORMED_PACKET, Reason.PROTOCOL_ERROR


def s(text: bytes) -> bytes:
    """A length-prefixed string or binary field."""
    return len(text).to_bytes(2, "big") + text


def pkt(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([first, len(body)]) + body


def connect(level: int = 5, flags: int = 0x02, props: bytes = b"\x00", payload: bytes = s(b"cid"),
            name: bytes = b"MQTT") -> bytes:
    return pkt(0x10, s(name) + bytes([level, flags]) + b"\x00\x3c" + (props if level == 5 else b"") + payload)


def publish(props: bytes, topic: bytes = s(b"a/b"), first: int = 0x32) -> bytes:
    return pkt(first, topic + b"\x00\x01" + props + b"payload")


#: (id, version (None: before CONNECT), sender, bytes, error class, reason)
CASES: list[tuple[str, ProtocolVersion | None, Role, bytes, type[ProtocolError], Reason]] = [
    # fixed header
    ("length-5-bytes", V5, C, b"\x30\xff\xff\xff\xff", MalformedPacket, MAL),
    ("length-not-shortest-v5", V5, C, b"\xc0\x80\x00", MalformedPacket, MAL),
    ("reserved-type-0", V5, C, b"\x00\x00", MalformedPacket, MAL),
    ("type-15-in-311", V311, C, b"\xf0\x00", MalformedPacket, MAL),
    ("subscribe-flags-0", V5, C, pkt(0x80, b"\x00\x01\x00\x01a\x00"), MalformedPacket, MAL),
    ("unsubscribe-flags-0", V311, C, pkt(0xA0, b"\x00\x01\x00\x01a"), MalformedPacket, MAL),
    ("pubrel-flags-0", V5, C, pkt(0x60, b"\x00\x01"), MalformedPacket, MAL),
    ("puback-flags-2", V5, C, pkt(0x42, b"\x00\x01"), MalformedPacket, MAL),
    ("pingreq-flags-1", V311, C, b"\xc1\x00", MalformedPacket, MAL),
    ("connack-from-client", V5, C, b"\x20\x03\x00\x00\x00", ProtocolError, PROTO),
    ("pingresp-from-client", V311, C, b"\xd0\x00", ProtocolError, PROTO),
    ("subscribe-from-server", V311, S, pkt(0x82, b"\x00\x01\x00\x01a\x00"), ProtocolError, PROTO),
    ("publish-before-connect", None, C, pkt(0x30, s(b"a") + b"x"), ProtocolError, PROTO),
    ("garbage-before-connect", None, C, b"GET / HTTP/1.1\r\n", ProtocolError, PROTO),
    # CONNECT
    ("protocol-name", None, C, connect(name=b"MQTX"), ProtocolError, PROTO),
    ("mqisdp-3", None, C, connect(level=3, name=b"MQIsdp", payload=s(b"c")),
     UnsupportedProtocolVersion, Reason.UNSUPPORTED_PROTOCOL_VERSION),
    ("level-3", None, C, connect(level=3), UnsupportedProtocolVersion, Reason.UNSUPPORTED_PROTOCOL_VERSION),
    ("level-6", None, C, connect(level=6), UnsupportedProtocolVersion, Reason.UNSUPPORTED_PROTOCOL_VERSION),
    ("connect-reserved-flag", None, C, connect(flags=0x03), MalformedPacket, MAL),
    ("will-qos-3", None, C, connect(flags=0x1E, payload=s(b"c") + b"\x00" + s(b"t") + s(b"m")), MalformedPacket, MAL),
    ("will-qos-without-will", None, C, connect(flags=0x0A), MalformedPacket, MAL),
    ("will-retain-without-will", None, C, connect(level=4, flags=0x22), MalformedPacket, MAL),
    ("password-without-user-311", None, C, connect(level=4, flags=0x42, payload=s(b"c") + s(b"pw")),
     ProtocolError, PROTO),
    ("connect-trailing-byte", None, C, connect(payload=s(b"cid") + b"\x00"), MalformedPacket, MAL),
    ("connect-truncated", None, C, connect(payload=b"\x00\x05ab"), MalformedPacket, MAL),
    ("client-id-bad-utf8", None, C, connect(payload=s(b"\xff\xfe")), MalformedPacket, MAL),
    ("client-id-nul", None, C, connect(payload=s(b"a\x00b")), MalformedPacket, MAL),
    ("client-id-surrogate", None, C, connect(payload=s(b"\xed\xa0\x80")), MalformedPacket, MAL),
    ("client-id-overlong", None, C, connect(payload=s(b"\xc0\x80")), MalformedPacket, MAL),
    # properties
    ("property-not-in-connect", None, C, connect(props=b"\x03\x23\x00\x01"), MalformedPacket, MAL),
    ("property-twice", None, C, connect(props=b"\x06\x21\x00\x05\x21\x00\x06"), MalformedPacket, MAL),
    ("property-unknown-id", None, C, connect(props=b"\x02\x05\x00"), MalformedPacket, MAL),
    ("property-length-beyond", None, C, connect(props=b"\x7f\x21\x00\x05"), MalformedPacket, MAL),
    ("property-value-beyond-block", None, C, connect(props=b"\x02\x21\x00"), MalformedPacket, MAL),
    ("receive-maximum-0", None, C, connect(props=b"\x03\x21\x00\x00"), ProtocolError, PROTO),
    ("maximum-packet-size-0", None, C, connect(props=b"\x05\x27\x00\x00\x00\x00"), ProtocolError, PROTO),
    ("request-problem-info-2", None, C, connect(props=b"\x02\x17\x02"), ProtocolError, PROTO),
    ("auth-data-without-method", None, C, connect(props=b"\x04\x16\x00\x01x"), ProtocolError, PROTO),
    ("user-property-bad-utf8", None, C, connect(props=b"\x07\x26\x00\x01\xff\x00\x01a"), MalformedPacket, MAL),
    # PUBLISH
    ("publish-qos-3", V311, C, pkt(0x36, s(b"a") + b"\x00\x01"), MalformedPacket, MAL),
    ("publish-dup-qos-0", V5, C, pkt(0x38, s(b"a") + b"\x00"), MalformedPacket, MAL),
    ("publish-dup-qos-0-311", V311, C, pkt(0x38, s(b"a")), MalformedPacket, MAL),
    ("publish-packet-id-0", V311, C, pkt(0x32, s(b"a") + b"\x00\x00"), ProtocolError, PROTO),
    ("publish-topic-beyond", V311, C, pkt(0x30, b"\x00\x09abc"), MalformedPacket, MAL),
    ("publish-no-topic", V311, C, pkt(0x30, b"\x00"), MalformedPacket, MAL),
    ("publish-no-property-length", V5, C, pkt(0x30, s(b"a")), MalformedPacket, MAL),
    ("publish-bad-utf8-topic", V311, C, pkt(0x30, s(b"a\xffb") + b"x"), MalformedPacket, MAL),
    ("publish-nul-topic", V5, C, pkt(0x30, s(b"a\x00b") + b"\x00"), MalformedPacket, MAL),
    ("topic-alias-0", V5, C, publish(b"\x03\x23\x00\x00"), ProtocolError, Reason.TOPIC_ALIAS_INVALID),
    ("subscription-id-from-client", V5, C, publish(b"\x02\x0b\x01"), MalformedPacket, MAL),
    ("publish-property-not-allowed", V5, C, publish(b"\x03\x21\x00\x01"), MalformedPacket, MAL),
    ("payload-format-2", V5, C, publish(b"\x02\x01\x02"), ProtocolError, PROTO),
    ("subscription-id-0-from-server", V5, S, publish(b"\x02\x0b\x00"), ProtocolError, PROTO),
    ("subscription-id-not-shortest", V5, S, publish(b"\x03\x0b\x81\x00"), MalformedPacket, MAL),
    # acknowledgements
    ("puback-3-bytes-311", V311, C, pkt(0x40, b"\x00\x01\x00"), MalformedPacket, MAL),
    ("puback-1-byte", V5, C, pkt(0x40, b"\x00"), MalformedPacket, MAL),
    ("puback-id-0", V5, C, pkt(0x40, b"\x00\x00"), ProtocolError, PROTO),
    ("puback-unknown-reason", V5, C, pkt(0x40, b"\x00\x01\x05"), MalformedPacket, MAL),
    ("puback-pubrel-reason", V5, C, pkt(0x40, b"\x00\x01\x92"), MalformedPacket, MAL),
    ("pubrel-puback-reason", V5, C, pkt(0x62, b"\x00\x01\x10"), MalformedPacket, MAL),
    ("puback-trailing", V5, C, pkt(0x40, b"\x00\x01\x00\x00\x00"), MalformedPacket, MAL),
    # SUBSCRIBE / UNSUBSCRIBE
    ("subscribe-no-filter", V311, C, pkt(0x82, b"\x00\x01"), ProtocolError, PROTO),
    ("subscribe-no-filter-v5", V5, C, pkt(0x82, b"\x00\x01\x00"), ProtocolError, PROTO),
    ("subscribe-reserved-311", V311, C, pkt(0x82, b"\x00\x01" + s(b"a") + b"\x04"), MalformedPacket, MAL),
    ("subscribe-reserved-v5", V5, C, pkt(0x82, b"\x00\x01\x00" + s(b"a") + b"\x40"), MalformedPacket, MAL),
    ("subscribe-retain-handling-3", V5, C, pkt(0x82, b"\x00\x01\x00" + s(b"a") + b"\x30"), MalformedPacket, MAL),
    ("subscribe-qos-3", V311, C, pkt(0x82, b"\x00\x01" + s(b"a") + b"\x03"), MalformedPacket, MAL),
    ("subscribe-missing-options", V311, C, pkt(0x82, b"\x00\x01" + s(b"a")), MalformedPacket, MAL),
    ("subscribe-id-0", V311, C, pkt(0x82, b"\x00\x00" + s(b"a") + b"\x00"), ProtocolError, PROTO),
    ("subscription-id-twice", V5, C, pkt(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02" + s(b"a") + b"\x00"),
     MalformedPacket, MAL),
    ("unsubscribe-no-filter", V5, C, pkt(0xA2, b"\x00\x01\x00"), ProtocolError, PROTO),
    # PINGREQ, DISCONNECT, AUTH
    ("pingreq-with-body", V5, C, pkt(0xC0, b"\x00"), MalformedPacket, MAL),
    ("disconnect-body-311", V311, C, pkt(0xE0, b"\x00"), MalformedPacket, MAL),
    ("disconnect-unknown-reason", V5, C, pkt(0xE0, b"\x05"), MalformedPacket, MAL),
    ("disconnect-session-expiry-from-server", V5, S, pkt(0xE0, b"\x00\x05\x11\x00\x00\x00\x01"),
     MalformedPacket, MAL),
    ("auth-without-method", V5, C, pkt(0xF0, b"\x18\x00"), ProtocolError, PROTO),
    ("auth-unknown-reason", V5, C, pkt(0xF0, b"\x01\x00"), MalformedPacket, MAL),
    # server -> client
    ("connack-reserved-flags", V311, S, b"\x20\x02\x02\x00", MalformedPacket, MAL),
    ("connack-return-code-6", V311, S, b"\x20\x02\x00\x06", MalformedPacket, MAL),
    ("connack-v5-without-properties", V5, S, b"\x20\x02\x00\x00", MalformedPacket, MAL),
    ("connack-present-and-refused", V5, S, b"\x20\x03\x01\x87\x00", ProtocolError, PROTO),
    ("connack-v5-bad-reason", V5, S, b"\x20\x03\x00\x8b\x00", MalformedPacket, MAL),
    ("suback-empty", V311, S, b"\x90\x02\x00\x01", ProtocolError, PROTO),
    ("suback-code-3-311", V311, S, b"\x90\x03\x00\x01\x03", MalformedPacket, MAL),
    ("unsuback-3-bytes-311", V311, S, b"\xb0\x03\x00\x01\x00", MalformedPacket, MAL),
    ("unsuback-v5-no-reasons", V5, S, b"\xb0\x03\x00\x01\x00", ProtocolError, PROTO),
    ("pingreq-from-server", V5, S, b"\xc0\x00", ProtocolError, PROTO),
]


def _decoder(version: ProtocolVersion | None, role: Role, **kwargs: int) -> Decoder:
    return Decoder(version, role=role, **kwargs)


@pytest.mark.parametrize(("version", "role", "wire", "error", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused(version: ProtocolVersion | None, role: Role, wire: bytes, error: type[ProtocolError],
                 reason: Reason) -> None:
    decoder = _decoder(version, role)
    decoder.feed(wire)
    with pytest.raises(ProtocolError) as caught:
        decoder.next_packet()
    assert type(caught.value) is error, caught.value
    assert caught.value.reason is reason
    # unusable afterwards, whatever comes next
    decoder.feed(b"\xc0\x00")
    with pytest.raises(ProtocolError):
        decoder.next_packet()


def test_refused_byte_by_byte_too() -> None:
    """The same refusals arrive whatever the reads' sizes (here one byte at a time)."""
    for name, version, role, wire, error, _reason in CASES:
        decoder = _decoder(version, role)
        raised: ProtocolError | None = None
        for byte in wire:
            decoder.feed(bytes([byte]))
            try:
                decoder.next_packet()
            except ProtocolError as caught:
                raised = caught
                break
        assert type(raised) is error, name


def test_too_large_is_raised_from_the_fixed_header() -> None:
    decoder = Decoder(V5, max_packet_size=1000)
    decoder.feed(b"\x30\xe6\x07")  # remaining length 998: 1 + 2 + 998 bytes in all
    with pytest.raises(PacketTooLarge) as caught:
        decoder.next_packet()
    assert caught.value.reason is Reason.PACKET_TOO_LARGE
    ok = Decoder(V5, max_packet_size=1000)
    ok.feed(b"\x30\xe5\x07")  # 1 + 2 + 997 = 1000: allowed, waits for the body
    assert ok.next_packet() is None


def test_too_large_before_connect() -> None:
    decoder = Decoder(max_packet_size=64)
    decoder.feed(b"\x10\xff\x7f")
    with pytest.raises(PacketTooLarge):
        decoder.next_packet()


def test_non_shortest_remaining_length_is_tolerated_in_311() -> None:
    decoder = Decoder(V311)
    decoder.feed(b"\xc0\x80\x00")  # MQTT 3.1.1 does not require the shortest form
    assert decoder.next_packet() == PingReq()


def test_password_without_user_name_is_fine_in_v5() -> None:
    decoder = Decoder()
    decoder.feed(connect(flags=0x42, payload=s(b"c") + s(b"pw")))
    packet = decoder.next_packet()
    assert packet is not None
    assert getattr(packet, "password", None) == b"pw"
    assert getattr(packet, "username", "") is None


def test_version_is_known_even_when_the_connect_is_refused() -> None:
    decoder = Decoder()
    decoder.feed(connect(props=b"\x03\x21\x00\x00"))
    with pytest.raises(ProtocolError):
        decoder.next_packet()
    assert decoder.version is V5


def test_user_property_may_repeat_and_keeps_order() -> None:
    decoder = Decoder(V5)
    decoder.feed(pkt(0x30, s(b"a/b") + b"\x0e\x26\x00\x01a\x00\x01b\x26\x00\x01a\x00\x01c" + b"payload"))
    packet = decoder.next_packet()
    assert isinstance(packet, Publish)
    assert packet.properties.user_properties == (("a", "b"), ("a", "c"))


# --- every property in every packet that must not carry it (MQTT 5 section 2.2.2.2) ----------------

#: field -> (identifier, a valid value of its wire type), from the spec's property table.
PROPERTY_IDS = {
    "payload_format_indicator": (0x01, b"\x01"), "message_expiry_interval": (0x02, b"\x00\x00\x00\x01"),
    "content_type": (0x03, s(b"x")), "response_topic": (0x08, s(b"x")), "correlation_data": (0x09, s(b"x")),
    "subscription_identifiers": (0x0B, b"\x01"), "session_expiry_interval": (0x11, b"\x00\x00\x00\x01"),
    "assigned_client_identifier": (0x12, s(b"x")), "server_keep_alive": (0x13, b"\x00\x01"),
    "authentication_method": (0x15, s(b"x")), "authentication_data": (0x16, s(b"x")),
    "request_problem_information": (0x17, b"\x01"), "will_delay_interval": (0x18, b"\x00\x00\x00\x01"),
    "request_response_information": (0x19, b"\x01"), "response_information": (0x1A, s(b"x")),
    "server_reference": (0x1C, s(b"x")), "reason_string": (0x1F, s(b"x")), "receive_maximum": (0x21, b"\x00\x01"),
    "topic_alias_maximum": (0x22, b"\x00\x01"), "topic_alias": (0x23, b"\x00\x01"), "maximum_qos": (0x24, b"\x01"),
    "retain_available": (0x25, b"\x01"), "maximum_packet_size": (0x27, b"\x00\x00\x00\x01"),
    "wildcard_subscription_available": (0x28, b"\x01"), "subscription_identifier_available": (0x29, b"\x01"),
    "shared_subscription_available": (0x2A, b"\x01"),
}
_MARK = (("X", "X"),)
_MARKED = Properties(user_properties=_MARK)
_MARK_BLOCK = b"\x07\x26\x00\x01X\x00\x01X"
_AUTH_MARKED = Properties(authentication_method="m", user_properties=_MARK)
#: (kind in strategies.ALLOWED, sender, a packet whose only user property is the mark, extra fields allowed)
CARRIERS: list[tuple[str, Role, Packet, tuple[str, ...]]] = [
    ("connect", C, Connect("c", V5, properties=_MARKED), ()),
    ("will", C, Connect("c", V5, will=Will("w", b"", properties=_MARKED)), ()),
    ("connack", S, ConnAck(properties=_MARKED), ()),
    *[("publish", role, Publish("t", b"x", properties=_MARKED), extra) for role, extra in
      ((C, ()), (S, ("subscription_identifiers",)))],
    *[("ack", role, cls(1, properties=_MARKED), ()) for cls in (PubAck, PubRec, PubRel, PubComp) for role in (C, S)],
    ("subscribe", C, Subscribe(1, (SubscriptionRequest("a"),), _MARKED), ("subscription_identifiers",)),
    ("ack", S, SubAck(1, (Reason.SUCCESS,), _MARKED), ()),
    ("unsubscribe", C, Unsubscribe(1, ("a",), _MARKED), ()),
    ("ack", S, UnsubAck(1, (Reason.SUCCESS,), _MARKED), ()),
    ("disconnect", C, Disconnect(properties=_MARKED), ("session_expiry_interval",)),
    ("disconnect", S, Disconnect(properties=_MARKED), ()),
    *[("auth", role, Auth(Reason.CONTINUE_AUTHENTICATION, _AUTH_MARKED), ()) for role in (C, S)],
]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _swap_block(wire: bytes, old_block: bytes, new_block: bytes) -> bytes:
    """`wire` with a property block replaced, and its remaining length fixed."""
    head = 2
    while wire[head - 1] & 0x80:
        head += 1
    body = wire[head:]
    assert body.count(old_block) == 1
    body = body.replace(old_block, new_block)
    return wire[:1] + _varint(len(body)) + body


@pytest.mark.parametrize(("kind", "role", "carrier", "extra"), CARRIERS,
                         ids=[f"{c[0]}-{type(c[2]).__name__}-{c[1].value}" for c in CARRIERS])
def test_property_not_allowed(kind: str, role: Role, carrier: Packet, extra: tuple[str, ...]) -> None:
    wire = encode(carrier, V5)
    decoder = Decoder(V5, role=role)
    decoder.feed(wire)
    assert decoder.next_packet() == carrier  # the carrier itself is fine
    allowed = {*ALLOWED[kind], *extra}
    refused = [name for name in PROPERTY_IDS if name not in allowed]
    assert refused
    # AUTH always carries its method: it stays in the block beside the refused property
    method = b"\x15\x00\x01m" if kind == "auth" else b""
    old_block = _varint(len(method) + 7) + method + _MARK_BLOCK[1:]
    for name in refused:
        pid, value = PROPERTY_IDS[name]
        props = method + bytes([pid]) + value
        decoder = Decoder(V5, role=role)
        decoder.feed(_swap_block(wire, old_block, _varint(len(props)) + props))
        with pytest.raises(MalformedPacket):
            decoder.next_packet()
