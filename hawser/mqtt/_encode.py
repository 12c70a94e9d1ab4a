"""Writing packet values as MQTT 3.1.1 or 5 bytes. Pure; raises ValueError for what the version cannot
express (an AUTH in 3.1.1, a refusing PUBACK in 3.1.1, an option 3.1.1 lacks, an over-long string).

The hot packets (PUBACK, PUBLISH) are written with one join and no intermediate body copy.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hawser.mqtt._properties import WILL, encode_properties
from hawser.mqtt._wire import (
    AUTH_REASONS,
    BYTE,
    CONNACK_REASONS,
    DISCONNECT_REASONS,
    PUBACK_REASONS,
    PUBREL_REASONS,
    SUBACK_REASONS,
    UNSUBACK_REASONS,
    binary,
    check_reason,
    pack_u16,
    string,
    v311_connack_code,
    v311_suback_code,
    varint,
)
from hawser.mqtt.packets import (
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

#: First byte and remaining length 2 of a PUBACK, then the packet id: a plain PUBACK in one call.
_pack_puback = struct.Struct(">HH").pack
_PUBACK_HEAD = 0x4002


def _packet(first: int, body: bytes) -> bytes:
    return BYTE[first] + varint(len(body)) + body


def _empty(props: Properties) -> bool:
    return props is NO_PROPERTIES or props == NO_PROPERTIES


def _connect(p: Connect, v5: bool) -> bytes:
    v5 = p.protocol_version is ProtocolVersion.V5  # a CONNECT is written in its own version
    flags = 0x02 if p.clean_start else 0
    payload = [string(p.client_id)]
    if p.will is not None:
        will = p.will
        flags |= 0x04 | will.qos << 3 | will.retain << 5
        if v5:
            payload.append(encode_properties(will.properties, WILL))
        payload += [string(will.topic), binary(will.payload)]
    if p.username is not None:
        flags |= 0x80
        payload.append(string(p.username))
    if p.password is not None:
        if not v5 and p.username is None:
            raise ValueError("MQTT 3.1.1 has no password without a user name")
        flags |= 0x40
        payload.append(binary(p.password))
    head = b"\x00\x04MQTT" + BYTE[p.protocol_version] + BYTE[flags] + pack_u16(p.keep_alive)
    if v5:
        head += encode_properties(p.properties, 1)
    return _packet(0x10, head + b"".join(payload))


def _connack(p: ConnAck, v5: bool) -> bytes:
    if p.session_present and p.reason is not Reason.SUCCESS:
        raise ValueError("a refusing CONNACK has no session present")
    flags = BYTE[p.session_present]
    if not v5:
        return b"\x20\x02" + flags + BYTE[v311_connack_code(p.reason)]
    code = check_reason(p.reason, CONNACK_REASONS, "CONNACK")
    return _packet(0x20, flags + BYTE[code] + encode_properties(p.properties, 2))


def _publish(p: Publish, v5: bool) -> bytes:
    topic = string(p.topic)
    pid = pack_u16(p.packet_id) if p.packet_id is not None else b""
    props = encode_properties(p.properties, 3) if v5 else b""
    first = 0x30 | p.dup << 3 | p.qos << 1 | p.retain
    size = len(topic) + len(pid) + len(props) + len(p.payload)
    return b"".join((BYTE[first], varint(size), topic, pid, props, p.payload))


def _ack(first: int, allowed: frozenset[Reason], what: str) -> Callable[[Any, bool], bytes]:
    packet_type = first >> 4

    def write(p: PubAck | PubRec | PubRel | PubComp, v5: bool) -> bytes:
        pid = pack_u16(p.packet_id)
        if not v5:
            if p.reason is not Reason.SUCCESS:
                raise ValueError(f"a 3.1.1 {what} cannot carry {p.reason!r} (disconnect instead)")
            return BYTE[first] + b"\x02" + pid
        code = check_reason(p.reason, allowed, what)
        if _empty(p.properties):  # reason and property length may be left out [MQTT 3.4.2.1]
            return BYTE[first] + (b"\x02" + pid if code == 0 else b"\x03" + pid + BYTE[code])
        return _packet(first, pid + BYTE[code] + encode_properties(p.properties, packet_type))

    return write


def _subscribe(p: Subscribe, v5: bool) -> bytes:
    parts = [pack_u16(p.packet_id)]
    if v5:
        parts.append(encode_properties(p.properties, 8))
    for s in p.subscriptions:
        options = s.qos
        if v5:
            options |= s.no_local << 2 | s.retain_as_published << 3 | s.retain_handling << 4
        elif s.no_local or s.retain_as_published or s.retain_handling:
            raise ValueError("3.1.1 subscriptions have no options beyond QoS")
        parts += [string(s.topic_filter), BYTE[options]]
    return _packet(0x82, b"".join(parts))


def _suback(p: SubAck, v5: bool) -> bytes:
    if not p.reasons:
        raise ValueError("a SUBACK has one reason code per topic filter, so at least one")
    if v5:
        codes = bytes(check_reason(r, SUBACK_REASONS, "SUBACK") for r in p.reasons)
        return _packet(0x90, pack_u16(p.packet_id) + encode_properties(p.properties, 9) + codes)
    return _packet(0x90, pack_u16(p.packet_id) + bytes(v311_suback_code(r) for r in p.reasons))


def _unsubscribe(p: Unsubscribe, v5: bool) -> bytes:
    props = encode_properties(p.properties, 10) if v5 else b""
    return _packet(0xA2, pack_u16(p.packet_id) + props + b"".join(string(f) for f in p.topic_filters))


def _unsuback(p: UnsubAck, v5: bool) -> bytes:
    if not v5:
        return b"\xb0\x02" + pack_u16(p.packet_id)
    if not p.reasons:
        raise ValueError("an MQTT 5 UNSUBACK has one reason code per topic filter, so at least one")
    codes = bytes(check_reason(r, UNSUBACK_REASONS, "UNSUBACK") for r in p.reasons)
    return _packet(0xB0, pack_u16(p.packet_id) + encode_properties(p.properties, 11) + codes)


def _reason_only(first: int, allowed: frozenset[Reason], what: str) -> Callable[[Any, bool], bytes]:
    """DISCONNECT and AUTH: reason and properties, both left out when they are the defaults."""

    def write(p: Disconnect | Auth, v5: bool) -> bytes:
        if not v5:
            if first == 0xF0:
                raise ValueError("MQTT 3.1.1 has no AUTH packet")
            return b"\xe0\x00"
        code = check_reason(p.reason, allowed, what)
        if first == 0xF0 and p.properties.authentication_method is None and (code or not _empty(p.properties)):
            raise ValueError("an AUTH other than a bare success needs an authentication method")
        if _empty(p.properties):
            return BYTE[first] + (b"\x00" if code == 0 else b"\x01" + BYTE[code])
        return _packet(first, BYTE[code] + encode_properties(p.properties, first >> 4))

    return write


WRITERS: dict[type, Callable[[Any, bool], bytes]] = {
    Connect: _connect,
    ConnAck: _connack,
    Publish: _publish,
    PubAck: _ack(0x40, PUBACK_REASONS, "PUBACK"),
    PubRec: _ack(0x50, PUBACK_REASONS, "PUBREC"),
    PubRel: _ack(0x62, PUBREL_REASONS, "PUBREL"),
    PubComp: _ack(0x70, PUBREL_REASONS, "PUBCOMP"),
    Subscribe: _subscribe,
    SubAck: _suback,
    Unsubscribe: _unsubscribe,
    UnsubAck: _unsuback,
    PingReq: lambda p, v5: b"\xc0\x00",
    PingResp: lambda p, v5: b"\xd0\x00",
    Disconnect: _reason_only(0xE0, DISCONNECT_REASONS, "DISCONNECT"),
    Auth: _reason_only(0xF0, AUTH_REASONS, "AUTH"),
}


def encode_puback(packet_id: int) -> bytes:
    """A successful PUBACK without properties: the same 4 bytes in 3.1.1 and 5."""
    return _pack_puback(_PUBACK_HEAD, packet_id)
