"""The MQTT data representations (section 1.5): integers, variable byte integers, UTF-8 strings and
binary data, written to bytes and read by a bounds-checked cursor, plus the reason-code tables.

Reading raises `MalformedPacket` only; writing raises `ValueError` for a value the wire cannot carry.
"""

from __future__ import annotations

import enum
import struct

from hawser.mqtt.errors import MalformedPacket
from hawser.mqtt.packets import MAX_UINT16, MAX_VARINT, Reason


class Role(enum.Enum):
    """Whose packets a decoder reads: `CLIENT` means "packets clients send" (a server's decoder)."""

    CLIENT = "client"
    SERVER = "server"


pack_u16 = struct.Struct(">H").pack
pack_u32 = struct.Struct(">I").pack
_unpack_u32 = struct.Struct(">I").unpack_from

#: One-byte varints and single bytes, shared rather than built per packet.
BYTE = [bytes((i,)) for i in range(256)]


def varint(value: int) -> bytes:
    if value < 0x80:
        return BYTE[value]
    if value > MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        value, digit = value >> 7, value & 0x7F
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def string(text: str) -> bytes:
    data = text.encode()  # strict: a lone surrogate raises UnicodeEncodeError, a ValueError
    if len(data) > MAX_UINT16:
        raise ValueError("a UTF-8 string is at most 65,535 bytes")
    if "\x00" in text:
        raise ValueError("a UTF-8 string must not contain U+0000")
    return pack_u16(len(data)) + data


def binary(data: bytes) -> bytes:
    if len(data) > MAX_UINT16:
        raise ValueError("binary data is at most 65,535 bytes")
    return pack_u16(len(data)) + data


def decode_text(data: bytes) -> str:
    """UTF-8 as MQTT wants it: well-formed (no surrogates, no overlongs) and without U+0000."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise MalformedPacket("invalid UTF-8 in a string") from None
    if "\x00" in text:
        raise MalformedPacket("U+0000 in a string")
    return text


class Reader:
    """A cursor over one packet's body; every read checks the bounds (`end`, movable for properties)."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def _need(self, n: int) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise MalformedPacket("packet shorter than its fields")
        self.pos = pos + n
        return pos

    def u8(self) -> int:
        return self.data[self._need(1)]

    def u16(self) -> int:
        pos = self._need(2)
        return (self.data[pos] << 8) | self.data[pos + 1]

    def u32(self) -> int:
        return int(_unpack_u32(self.data, self._need(4))[0])

    def varint(self) -> int:
        value = shift = 0
        for count in range(4):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and count:
                    raise MalformedPacket("variable byte integer not in its shortest form")
                return value
            shift += 7
        raise MalformedPacket("variable byte integer longer than 4 bytes")

    def raw(self, n: int) -> bytes:
        pos = self._need(n)
        return self.data[pos : pos + n]

    def binary(self) -> bytes:
        return self.raw(self.u16())

    def string(self) -> str:
        return decode_text(self.raw(self.u16()))

    @property
    def left(self) -> int:
        return self.end - self.pos

    def rest(self) -> bytes:
        pos, self.pos = self.pos, self.end
        return self.data[pos : self.end]

    def done(self) -> None:
        if self.pos != self.end:
            raise MalformedPacket("trailing bytes after the last field")


# --- reason codes allowed per packet type (MQTT 5, tables in sections 3.x) -------------------------

_R = Reason
CONNACK_REASONS = frozenset({
    _R.SUCCESS, _R.UNSPECIFIED_ERROR, _R.MALFORMED_PACKET, _R.PROTOCOL_ERROR, _R.IMPLEMENTATION_SPECIFIC_ERROR,
    _R.UNSUPPORTED_PROTOCOL_VERSION, _R.CLIENT_IDENTIFIER_NOT_VALID, _R.BAD_USER_NAME_OR_PASSWORD,
    _R.NOT_AUTHORIZED, _R.SERVER_UNAVAILABLE, _R.SERVER_BUSY, _R.BANNED, _R.BAD_AUTHENTICATION_METHOD,
    _R.TOPIC_NAME_INVALID, _R.PACKET_TOO_LARGE, _R.QUOTA_EXCEEDED, _R.PAYLOAD_FORMAT_INVALID,
    _R.RETAIN_NOT_SUPPORTED, _R.QOS_NOT_SUPPORTED, _R.USE_ANOTHER_SERVER, _R.SERVER_MOVED,
    _R.CONNECTION_RATE_EXCEEDED,
})
PUBACK_REASONS = frozenset({  # PUBACK and PUBREC
    _R.SUCCESS, _R.NO_MATCHING_SUBSCRIBERS, _R.UNSPECIFIED_ERROR, _R.IMPLEMENTATION_SPECIFIC_ERROR,
    _R.NOT_AUTHORIZED, _R.TOPIC_NAME_INVALID, _R.PACKET_IDENTIFIER_IN_USE, _R.QUOTA_EXCEEDED,
    _R.PAYLOAD_FORMAT_INVALID,
})
PUBREL_REASONS = frozenset({_R.SUCCESS, _R.PACKET_IDENTIFIER_NOT_FOUND})  # PUBREL and PUBCOMP
SUBACK_REASONS = frozenset({
    _R.SUCCESS, _R.GRANTED_QOS_1, _R.GRANTED_QOS_2, _R.UNSPECIFIED_ERROR, _R.IMPLEMENTATION_SPECIFIC_ERROR,
    _R.NOT_AUTHORIZED, _R.TOPIC_FILTER_INVALID, _R.PACKET_IDENTIFIER_IN_USE, _R.QUOTA_EXCEEDED,
    _R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
    _R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
})
UNSUBACK_REASONS = frozenset({
    _R.SUCCESS, _R.NO_SUBSCRIPTION_EXISTED, _R.UNSPECIFIED_ERROR, _R.IMPLEMENTATION_SPECIFIC_ERROR,
    _R.NOT_AUTHORIZED, _R.TOPIC_FILTER_INVALID, _R.PACKET_IDENTIFIER_IN_USE,
})
DISCONNECT_REASONS = frozenset({
    _R.SUCCESS, _R.DISCONNECT_WITH_WILL, _R.UNSPECIFIED_ERROR, _R.MALFORMED_PACKET, _R.PROTOCOL_ERROR,
    _R.IMPLEMENTATION_SPECIFIC_ERROR, _R.NOT_AUTHORIZED, _R.SERVER_BUSY, _R.SERVER_SHUTTING_DOWN,
    _R.KEEP_ALIVE_TIMEOUT, _R.SESSION_TAKEN_OVER, _R.TOPIC_FILTER_INVALID, _R.TOPIC_NAME_INVALID,
    _R.RECEIVE_MAXIMUM_EXCEEDED, _R.TOPIC_ALIAS_INVALID, _R.PACKET_TOO_LARGE, _R.MESSAGE_RATE_TOO_HIGH,
    _R.QUOTA_EXCEEDED, _R.ADMINISTRATIVE_ACTION, _R.PAYLOAD_FORMAT_INVALID, _R.RETAIN_NOT_SUPPORTED,
    _R.QOS_NOT_SUPPORTED, _R.USE_ANOTHER_SERVER, _R.SERVER_MOVED, _R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
    _R.CONNECTION_RATE_EXCEEDED, _R.MAXIMUM_CONNECT_TIME, _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
    _R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
})
AUTH_REASONS = frozenset({_R.SUCCESS, _R.CONTINUE_AUTHENTICATION, _R.REAUTHENTICATE})

_BY_VALUE = {int(r): r for r in Reason}


def read_reason(value: int, allowed: frozenset[Reason], what: str) -> Reason:
    reason = _BY_VALUE.get(value)
    if reason is None or reason not in allowed:
        raise MalformedPacket(f"reason code 0x{value:02X} is not valid in {what}")
    return reason


def check_reason(reason: Reason, allowed: frozenset[Reason], what: str) -> int:
    if reason not in allowed:
        raise ValueError(f"{reason!r} is not a reason code of {what}")
    return int(reason)


#: 3.1.1 CONNACK return codes (section 3.2.2.3) and their MQTT 5 counterparts.
V311_CONNACK_DECODE = {0: _R.SUCCESS, 1: _R.UNSUPPORTED_PROTOCOL_VERSION, 2: _R.CLIENT_IDENTIFIER_NOT_VALID,
                       3: _R.SERVER_UNAVAILABLE, 4: _R.BAD_USER_NAME_OR_PASSWORD, 5: _R.NOT_AUTHORIZED}


def v311_connack_code(reason: Reason) -> int:
    if reason is _R.SUCCESS:
        return 0
    if not reason.is_error:
        raise ValueError(f"{reason!r} is not a CONNACK return code")
    return {
        _R.UNSUPPORTED_PROTOCOL_VERSION: 1, _R.CLIENT_IDENTIFIER_NOT_VALID: 2, _R.BAD_USER_NAME_OR_PASSWORD: 4,
        _R.NOT_AUTHORIZED: 5, _R.BANNED: 5,
    }.get(reason, 3)


V311_SUBACK_DECODE = {0: _R.SUCCESS, 1: _R.GRANTED_QOS_1, 2: _R.GRANTED_QOS_2, 0x80: _R.UNSPECIFIED_ERROR}


def v311_suback_code(reason: Reason) -> int:
    if reason.is_error:
        return 0x80
    if reason > _R.GRANTED_QOS_2:
        raise ValueError(f"{reason!r} is not a SUBACK return code")
    return int(reason)
