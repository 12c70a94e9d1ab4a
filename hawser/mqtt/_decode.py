"""Reading the body of each MQTT 3.1.1 / 5 packet type into a packet value. Pure.

Every reader takes `(flags, body, v5, role)`: the low nibble of the fixed header (already checked for
every type but PUBLISH), the bytes after the remaining length, the version, and the sender's role.
They raise only `ProtocolError` subclasses; packet constructors are never left to raise ValueError.
"""

from __future__ import annotations

from collections.abc import Callable

from hawser.mqtt._properties import WILL, read_properties, reject_auth_data_without_method
from hawser.mqtt._wire import (
    AUTH_REASONS,
    CONNACK_REASONS,
    DISCONNECT_REASONS,
    PUBACK_REASONS,
    PUBREL_REASONS,
    SUBACK_REASONS,
    UNSUBACK_REASONS,
    V311_CONNACK_DECODE,
    V311_SUBACK_DECODE,
    Reader,
    Role,
    read_reason,
)
from hawser.mqtt.errors import MalformedPacket, ProtocolError, UnsupportedProtocolVersion
from hawser.mqtt.packets import (
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    ProtocolVersion,
    PubAck,
    PubComp,
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
)

BodyReader = Callable[[int, bytes, bool, Role], Packet]
_PING_REQ, _PING_RESP = PingReq(), PingResp()

# A PUBLISH is built by setting its slots directly: its checks (QoS, packet id, DUP) are done here
# already, and the frozen dataclass constructor would cost half of the decoding time again.
_new = object.__new__
_set_topic, _set_payload, _set_qos, _set_retain, _set_dup, _set_id, _set_props = (
    Publish.__dict__[name].__set__
    for name in ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
)


def _packet_id(r: Reader) -> int:
    packet_id = r.u16()
    if not packet_id:
        raise ProtocolError("packet identifier 0")
    return packet_id


def peek_version(body: bytes) -> ProtocolVersion | None:
    """The version a CONNECT declares, if its first fields are well-formed (before reading the rest)."""
    if body[:6] == b"\x00\x04MQTT" and len(body) > 6 and body[6] in (4, 5):
        return ProtocolVersion(body[6])
    return None


def connect(flags: int, body: bytes, v5: bool, role: Role) -> Connect:
    r = Reader(body)
    name = r.raw(r.u16())
    level = r.u8()
    if name != b"MQTT":
        if name == b"MQIsdp":
            raise UnsupportedProtocolVersion("MQTT 3.1 (MQIsdp) is not supported")
        raise ProtocolError(f"protocol name {name!r} is not MQTT")
    if level not in (4, 5):
        raise UnsupportedProtocolVersion(f"protocol level {level} is not supported")
    v5 = level == 5
    connect_flags = r.u8()
    will_flag, will_qos, will_retain = connect_flags & 0x04, (connect_flags >> 3) & 3, bool(connect_flags & 0x20)
    if connect_flags & 0x01:
        raise MalformedPacket("reserved CONNECT flag set")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain without a will")
    has_username, has_password = connect_flags & 0x80, connect_flags & 0x40
    if has_password and not has_username and not v5:
        raise ProtocolError("password without user name")
    keep_alive = r.u16()
    props = read_properties(r, 1, role) if v5 else NO_PROPERTIES
    reject_auth_data_without_method(props)
    client_id = r.string()
    will = None
    if will_flag:
        will_props = read_properties(r, WILL, role) if v5 else NO_PROPERTIES
        will = Will(r.string(), r.binary(), will_qos, will_retain, will_props)
    username = r.string() if has_username else None
    password = r.binary() if has_password else None
    r.done()
    return Connect(client_id, ProtocolVersion(level), keep_alive, bool(connect_flags & 0x02), username, password,
                   will, props)


def connack(flags: int, body: bytes, v5: bool, role: Role) -> ConnAck:
    r = Reader(body)
    ack_flags, code = r.u8(), r.u8()
    if ack_flags & 0xFE:
        raise MalformedPacket("reserved CONNACK flags set")
    if v5:
        reason = read_reason(code, CONNACK_REASONS, "CONNACK")
        props = read_properties(r, 2, role)
    else:
        props = NO_PROPERTIES
        if code not in V311_CONNACK_DECODE:
            raise MalformedPacket(f"CONNACK return code {code}")
        reason = V311_CONNACK_DECODE[code]
    r.done()
    if ack_flags and reason is not Reason.SUCCESS:
        raise ProtocolError("session present on a refusing CONNACK")
    return ConnAck(bool(ack_flags), reason, props)


def publish(flags: int, body: bytes, v5: bool, role: Role) -> Publish:
    qos = (flags >> 1) & 3
    size = len(body)
    if size < 2:
        raise MalformedPacket("PUBLISH without a topic")
    end = 2 + ((body[0] << 8) | body[1])
    packet_id: int | None = None
    if qos:
        if qos == 3:
            raise MalformedPacket("PUBLISH with QoS 3")
        pos = end + 2
        if pos > size:
            raise MalformedPacket("PUBLISH shorter than its topic and packet identifier")
        packet_id = (body[end] << 8) | body[end + 1]
        if not packet_id:
            raise ProtocolError("packet identifier 0")
    else:
        if flags & 0x08:
            raise MalformedPacket("DUP set on a QoS 0 PUBLISH")
        if end > size:
            raise MalformedPacket("PUBLISH shorter than its topic")
        pos = end
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError:
        raise MalformedPacket("invalid UTF-8 in the topic") from None
    if "\x00" in topic:
        raise MalformedPacket("U+0000 in the topic")
    props = NO_PROPERTIES
    if v5:
        if pos >= size:
            raise MalformedPacket("PUBLISH without its property length")
        if body[pos]:
            r = Reader(body, pos)
            props = read_properties(r, 3, role)
            pos = r.pos
        else:
            pos += 1
    packet = _new(Publish)
    _set_topic(packet, topic)
    _set_payload(packet, body[pos:])
    _set_qos(packet, qos)
    _set_retain(packet, flags & 1 == 1)
    _set_dup(packet, flags & 8 == 8)
    _set_id(packet, packet_id)
    _set_props(packet, props)
    return packet


def _ack(cls: type[PubAck | PubRec | PubRel | PubComp], allowed: frozenset[Reason], packet_type: int) -> BodyReader:
    what = cls.__name__.upper()

    def read(flags: int, body: bytes, v5: bool, role: Role) -> Packet:
        size = len(body)
        if size == 2:
            packet_id = (body[0] << 8) | body[1]
            if not packet_id:
                raise ProtocolError("packet identifier 0")
            return cls(packet_id)
        if not v5:
            raise MalformedPacket(f"a 3.1.1 {what} is 2 bytes long")
        r = Reader(body)
        packet_id = _packet_id(r)
        reason = read_reason(r.u8(), allowed, what)
        props = read_properties(r, packet_type, role) if size > 3 else NO_PROPERTIES
        r.done()
        return cls(packet_id, reason, props)

    return read


def subscribe(flags: int, body: bytes, v5: bool, role: Role) -> Subscribe:
    r = Reader(body)
    packet_id = _packet_id(r)
    props = read_properties(r, 8, role) if v5 else NO_PROPERTIES
    subscriptions = []
    while r.left:
        topic_filter, options = r.string(), r.u8()
        if options & (0xC0 if v5 else 0xFC):
            raise MalformedPacket("reserved subscription option bits set")
        if options & 3 == 3 or (options >> 4) & 3 == 3:
            raise MalformedPacket("subscription QoS or retain handling 3")
        subscriptions.append(SubscriptionRequest(topic_filter, options & 3, bool(options & 4), bool(options & 8),
                                                 (options >> 4) & 3))
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without topic filters")
    return Subscribe(packet_id, tuple(subscriptions), props)


def suback(flags: int, body: bytes, v5: bool, role: Role) -> SubAck:
    r = Reader(body)
    packet_id = _packet_id(r)
    props = read_properties(r, 9, role) if v5 else NO_PROPERTIES
    codes = r.rest()
    if not codes:
        raise ProtocolError("SUBACK without reason codes")
    if v5:
        reasons = tuple(read_reason(code, SUBACK_REASONS, "SUBACK") for code in codes)
    elif all(code in V311_SUBACK_DECODE for code in codes):
        reasons = tuple(V311_SUBACK_DECODE[code] for code in codes)
    else:
        raise MalformedPacket("invalid SUBACK return code")
    return SubAck(packet_id, reasons, props)


def unsubscribe(flags: int, body: bytes, v5: bool, role: Role) -> Unsubscribe:
    r = Reader(body)
    packet_id = _packet_id(r)
    props = read_properties(r, 10, role) if v5 else NO_PROPERTIES
    filters = []
    while r.left:
        filters.append(r.string())
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters")
    return Unsubscribe(packet_id, tuple(filters), props)


def unsuback(flags: int, body: bytes, v5: bool, role: Role) -> UnsubAck:
    r = Reader(body)
    packet_id = _packet_id(r)
    if not v5:
        r.done()
        return UnsubAck(packet_id)
    props = read_properties(r, 11, role)
    codes = r.rest()
    if not codes:
        raise ProtocolError("UNSUBACK without reason codes")
    return UnsubAck(packet_id, tuple(read_reason(code, UNSUBACK_REASONS, "UNSUBACK") for code in codes), props)


def _empty(packet: PingReq | PingResp) -> BodyReader:
    def read(flags: int, body: bytes, v5: bool, role: Role) -> Packet:
        if body:
            raise MalformedPacket(f"{type(packet).__name__.upper()} with a body")
        return packet

    return read


def _reason_only(cls: type[Disconnect | Auth], allowed: frozenset[Reason], packet_type: int) -> BodyReader:
    """DISCONNECT and AUTH: an optional reason code, then optional properties."""
    what = cls.__name__.upper()

    def read(flags: int, body: bytes, v5: bool, role: Role) -> Packet:
        if not body:
            return cls()
        if not v5:
            raise MalformedPacket(f"a 3.1.1 {what} has no body")
        r = Reader(body)
        reason = read_reason(r.u8(), allowed, what)
        props = read_properties(r, packet_type, role) if len(body) > 1 else NO_PROPERTIES
        r.done()
        if cls is Auth and props.authentication_method is None:
            raise ProtocolError("AUTH without an authentication method")
        return cls(reason, props)

    return read


def readers(role: Role) -> dict[int, BodyReader]:
    """Packet type -> reader, for the packets the peer of `role` sends (AUTH is removed for 3.1.1)."""
    both: dict[int, BodyReader] = {
        3: publish,
        4: _ack(PubAck, PUBACK_REASONS, 4),
        5: _ack(PubRec, PUBACK_REASONS, 5),
        6: _ack(PubRel, PUBREL_REASONS, 6),
        7: _ack(PubComp, PUBREL_REASONS, 7),
        14: _reason_only(Disconnect, DISCONNECT_REASONS, 14),
        15: _reason_only(Auth, AUTH_REASONS, 15),
    }
    if role is Role.CLIENT:
        return {**both, 1: connect, 8: subscribe, 10: unsubscribe, 12: _empty(_PING_REQ)}
    return {**both, 2: connack, 9: suback, 11: unsuback, 13: _empty(_PING_RESP)}
