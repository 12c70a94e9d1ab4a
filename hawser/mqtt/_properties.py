"""MQTT 5 properties (section 2.2.2): which ones each packet may carry, their wire types and values, and
reading and writing a property block. An empty block is always `NO_PROPERTIES` (one shared value).

Reading raises `MalformedPacket` (unknown, misplaced or repeated identifiers, bad lengths) or
`ProtocolError` (a value outside its range, such as a Receive Maximum of 0); writing raises ValueError.
"""

from __future__ import annotations

from typing import Any

from hawser.mqtt._wire import BYTE, Reader, Role, binary, pack_u16, pack_u32, string, varint
from hawser.mqtt.errors import MalformedPacket, ProtocolError
from hawser.mqtt.packets import MAX_UINT16, MAX_UINT32, MAX_VARINT, NO_PROPERTIES, Properties, Reason

# Wire types.
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)

#: identifier -> (field of `Properties`, wire type, smallest valid value for integers)
SPECS: dict[int, tuple[str, int, int]] = {
    0x01: ("payload_format_indicator", _BYTE, 0),
    0x02: ("message_expiry_interval", _U32, 0),
    0x03: ("content_type", _STR, 0),
    0x08: ("response_topic", _STR, 0),
    0x09: ("correlation_data", _BIN, 0),
    0x0B: ("subscription_identifiers", _VARINT, 1),
    0x11: ("session_expiry_interval", _U32, 0),
    0x12: ("assigned_client_identifier", _STR, 0),
    0x13: ("server_keep_alive", _U16, 0),
    0x15: ("authentication_method", _STR, 0),
    0x16: ("authentication_data", _BIN, 0),
    0x17: ("request_problem_information", _BYTE, 0),
    0x18: ("will_delay_interval", _U32, 0),
    0x19: ("request_response_information", _BYTE, 0),
    0x1A: ("response_information", _STR, 0),
    0x1C: ("server_reference", _STR, 0),
    0x1F: ("reason_string", _STR, 0),
    0x21: ("receive_maximum", _U16, 1),
    0x22: ("topic_alias_maximum", _U16, 0),
    0x23: ("topic_alias", _U16, 1),
    0x24: ("maximum_qos", _BYTE, 0),
    0x25: ("retain_available", _BYTE, 0),
    0x26: ("user_properties", _PAIR, 0),
    0x27: ("maximum_packet_size", _U32, 1),
    0x28: ("wildcard_subscription_available", _BYTE, 0),
    0x29: ("subscription_identifier_available", _BYTE, 0),
    0x2A: ("shared_subscription_available", _BYTE, 0),
}
_MAXIMUM = {_BYTE: 1, _U16: MAX_UINT16, _U32: MAX_UINT32, _VARINT: MAX_VARINT}

#: Pseudo packet type of a CONNECT's will properties.
WILL = 0
_ANY_ACK = {0x1F, 0x26}
#: packet type -> identifiers it may carry, from either sender.
ALLOWED: dict[int, frozenset[int]] = {
    1: frozenset({0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16}),
    WILL: frozenset({0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26}),
    2: frozenset({0x11, 0x21, 0x24, 0x25, 0x27, 0x12, 0x22, 0x1F, 0x26, 0x28, 0x29, 0x2A, 0x13, 0x1A, 0x1C,
                  0x15, 0x16}),
    3: frozenset({0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x0B, 0x03}),
    4: frozenset(_ANY_ACK), 5: frozenset(_ANY_ACK), 6: frozenset(_ANY_ACK), 7: frozenset(_ANY_ACK),
    8: frozenset({0x0B, 0x26}),
    9: frozenset(_ANY_ACK),
    10: frozenset({0x26}),
    11: frozenset(_ANY_ACK),
    14: frozenset({0x11, 0x1F, 0x26, 0x1C}),
    15: frozenset({0x15, 0x16, 0x1F, 0x26}),
}
#: What one side must not send although the packet type allows it: a client's PUBLISH has no
#: Subscription Identifier [MQTT-3.3.4-6]; a server's DISCONNECT no Session Expiry Interval [MQTT-3.14.2-2].
_NOT_FROM = {Role.CLIENT: {3: {0x0B}}, Role.SERVER: {14: {0x11}}}
_DECODE_ALLOWED = {
    (kind, role): ids - _NOT_FROM[role].get(kind, set()) for kind, ids in ALLOWED.items() for role in Role
}
#: packet type -> (identifier, field, wire type) it may carry, and the fields it must leave empty.
_ENCODE_PLAN = {
    kind: (
        tuple((pid, SPECS[pid][0], SPECS[pid][1]) for pid in sorted(ids)),
        tuple(name for pid, (name, _, _) in SPECS.items() if pid not in ids),
    )
    for kind, ids in ALLOWED.items()
}
_EMPTY = b"\x00"


def _check_value(pid: int, kind: int, value: int) -> bool:
    return SPECS[pid][2] <= value <= _MAXIMUM[kind]


def encode_properties(props: Properties, packet_type: int) -> bytes:
    """The property block (length included) of `props` for a packet of `packet_type` (or `WILL`)."""
    if props is NO_PROPERTIES:
        return _EMPTY
    allowed, forbidden = _ENCODE_PLAN[packet_type]
    for name in forbidden:
        if getattr(props, name) not in (None, ()):
            raise ValueError(f"property {name} is not allowed in packet type {packet_type}")
    out: list[bytes] = []
    for pid, name, kind in allowed:
        value = getattr(props, name)
        if value is None or value == ():
            continue
        head = BYTE[pid]
        if kind == _PAIR:
            out.extend(head + string(k) + string(v) for k, v in value)
        elif kind == _STR:
            out.append(head + string(value))
        elif kind == _BIN:
            out.append(head + binary(value))
        else:
            values = value if kind == _VARINT else (value,)
            if kind == _VARINT and packet_type != 3 and len(values) > 1:
                raise ValueError("only a PUBLISH carries several subscription identifiers")
            for item in values:
                if not _check_value(pid, kind, item):
                    raise ValueError(f"property {name} out of range: {item}")
                encoded = BYTE[item] if kind == _BYTE else pack_u16(item) if kind == _U16 else (
                    pack_u32(item) if kind == _U32 else varint(item))
                out.append(head + encoded)
    body = b"".join(out)
    return varint(len(body)) + body


def read_properties(r: Reader, packet_type: int, role: Role) -> Properties:
    """Read a property block at the cursor; `role` is the sender, whose packets `packet_type` is."""
    length = r.varint()
    if not length:
        return NO_PROPERTIES
    end = r.pos + length
    if end > r.end:
        raise MalformedPacket("property length beyond the end of the packet")
    outer_end, r.end = r.end, end
    allowed = _DECODE_ALLOWED[packet_type, role]
    values: dict[str, Any] = {}
    users: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while r.pos < end:
        pid = r.u8()
        if pid not in allowed:
            raise MalformedPacket(f"property 0x{pid:02X} is not allowed in packet type {packet_type}")
        name, kind, _ = SPECS[pid]
        if kind == _PAIR:
            users.append((r.string(), r.string()))
            continue
        if kind == _VARINT:
            if sub_ids and packet_type != 3:
                raise MalformedPacket("subscription identifier given twice")
            sub_ids.append(r.varint())
            value: Any = sub_ids[-1]
        elif name in values:
            raise MalformedPacket(f"property {name} given twice")
        elif kind == _STR:
            values[name] = r.string()
            continue
        elif kind == _BIN:
            values[name] = r.binary()
            continue
        else:
            value = r.u8() if kind == _BYTE else r.u16() if kind == _U16 else r.u32()
            values[name] = value
        if not _check_value(pid, kind, value):
            reason = Reason.TOPIC_ALIAS_INVALID if pid == 0x23 else Reason.PROTOCOL_ERROR
            raise ProtocolError(f"property {name} has an invalid value: {value}", reason)
    r.end = outer_end
    if users:
        values["user_properties"] = tuple(users)
    if sub_ids:
        values["subscription_identifiers"] = tuple(sub_ids)
    return Properties(**values)


def reject_auth_data_without_method(props: Properties) -> None:
    if props.authentication_data is not None and props.authentication_method is None:
        raise ProtocolError("authentication data without an authentication method")
