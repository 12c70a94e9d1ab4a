"""The MQTT 3.1.1 and 5 wire format: `encode` a packet value to bytes, and a `Decoder` that turns a
byte stream into packet values. Pure: nothing here does I/O, awaits or keeps connection state beyond
the bytes not yet decoded.

CONTRACT (implemented by the codec work; see tests/mqtt/):
- `encode(packet, version)` writes any packet of `hawser.mqtt.packets` in either version (a CONNECT
  in its own `protocol_version`). 3.1.1 drops properties and maps reason codes: CONNACK return codes
  (0x84→1, 0x85→2, 0x88/0x89/0x80/other errors→3, 0x86→4, 0x87/0x8A→5) and SUBACK failures (→0x80).
  Raises ValueError for a value the version cannot express (AUTH in 3.1.1, a string over 65,535 bytes,
  a PUBACK/PUBREC/PUBREL/PUBCOMP with an error reason in 3.1.1, a reason code the packet type does not
  have in MQTT 5, a SUBACK or MQTT 5 UNSUBACK without reason codes, a property the packet type lacks).
- `Decoder(version, role=...)` parses what the peer of `role` sends (a server decodes client→server
  packets; the tests' clients decode server→client ones). `version=None` until a CONNECT told it
  (servers): only a CONNECT is accepted then, and the decoder adopts its version.
- `feed(data)` buffers; `next_packet()` returns the next complete packet or None when more bytes are
  needed. It raises only `ProtocolError` subclasses: `MalformedPacket` (bad lengths, reserved flags,
  invalid UTF-8 or U+0000 in strings, a property twice or not allowed in that packet, trailing bytes),
  `PacketTooLarge` (announced total size over `max_packet_size`, raised from the fixed header, before
  the body is buffered), `UnsupportedProtocolVersion`, `ProtocolError` (a packet type the role never
  receives, a QoS 3, a packet id of 0, ...). After raising, the decoder is unusable.
- Round trip: `Decoder(v).feed(encode(p, v)); next_packet() == p` for every packet a version can carry.
"""

from __future__ import annotations

from hawser.mqtt._decode import BodyReader, peek_version, readers
from hawser.mqtt._encode import WRITERS, encode_puback
from hawser.mqtt._wire import Role
from hawser.mqtt.errors import MalformedPacket, PacketTooLarge, ProtocolError
from hawser.mqtt.packets import NO_PROPERTIES, Connect, Packet, ProtocolVersion, PubAck, Reason

__all__ = ["Decoder", "Role", "encode"]

_V5 = ProtocolVersion.V5
_SUCCESS = Reason.SUCCESS


def encode(packet: Packet, version: ProtocolVersion) -> bytes:
    if type(packet) is PubAck and packet.reason is _SUCCESS and packet.properties is NO_PROPERTIES:
        return encode_puback(packet.packet_id)  # the hot reply of a device endpoint, alike in both versions
    try:
        writer = WRITERS[type(packet)]
    except KeyError:
        raise TypeError(f"not an MQTT packet: {packet!r}") from None
    return writer(packet, version == _V5)


#: Fixed-header flags every packet type but PUBLISH must carry (section 2.1.3).
_FLAGS = {6: 0b0010, 8: 0b0010, 10: 0b0010}
_Table = list["BodyReader | None"]


def _table(role: Role, version: ProtocolVersion | None) -> _Table:
    """First byte of a packet -> its body reader, or None for a byte this decoder must refuse."""
    table: _Table = [None] * 256
    if version is None:  # a server before CONNECT
        if role is Role.CLIENT:
            table[0x10] = readers(role)[1]
        return table
    for kind, reader in readers(role).items():
        if kind == 15 and version is not _V5:
            continue
        if kind == 3:
            table[0x30:0x40] = [reader] * 16
        else:
            table[kind << 4 | _FLAGS.get(kind, 0)] = reader
    return table


_TABLES = {(role, version): _table(role, version) for role in Role for version in (None, *ProtocolVersion)}


def _refusal(first: int, role: Role, version: ProtocolVersion | None) -> ProtocolError:
    kind = first >> 4
    if version is None:
        return ProtocolError(f"expected CONNECT, got packet type {kind}")
    if kind == 0 or (kind == 15 and version is not _V5):
        return MalformedPacket(f"reserved packet type {kind}")
    if kind in readers(role):
        return MalformedPacket(f"invalid fixed-header flags 0x{first & 15:X} for packet type {kind}")
    return ProtocolError(f"a {role.value} never sends packet type {kind}")


class Decoder:
    """Bytes in, packets out; see the module docstring. Buffering keeps the undecoded tail only: the
    common case (whole packets per read) slices the received bytes without copying them first."""

    __slots__ = ("_buf", "_error", "_max", "_pos", "_role", "_table", "_v5", "_version")

    def __init__(
        self, version: ProtocolVersion | None = None, *, role: Role = Role.CLIENT, max_packet_size: int = 268_435_460
    ) -> None:
        if version is None and role is not Role.CLIENT:
            raise ValueError("only a server's decoder learns its version from a CONNECT")
        if max_packet_size < 2:
            raise ValueError("max_packet_size must allow a 2-byte packet")
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._role = role
        self._max = max_packet_size
        self._error: ProtocolError | None = None
        self._adopt(version)

    def _adopt(self, version: ProtocolVersion | None) -> None:
        self._version = version
        self._v5 = version is _V5
        self._table = _TABLES[self._role, version]

    @property
    def version(self) -> ProtocolVersion | None:
        return self._version

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as packets."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._error is not None or not data:
            return
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            self._buf, self._pos = (data if type(data) is bytes else bytes(data)), 0
        elif type(buf) is bytes:  # a partial packet waits: from now on, append
            tail = bytearray(memoryview(buf)[pos:])
            tail += data
            self._buf, self._pos = tail, 0
        else:
            assert isinstance(buf, bytearray)
            if pos:
                del buf[:pos]  # cheap: CPython moves the start of a bytearray for a front deletion
                self._pos = 0
            buf += data

    def next_packet(self) -> Packet | None:
        if self._error is not None:
            raise self._error
        try:  # one frame, inline: this runs once per packet on the hot path
            buf, pos = self._buf, self._pos
            available = len(buf) - pos
            if not available:
                return None
            first = buf[pos]
            reader = self._table[first]
            if reader is None:
                raise _refusal(first, self._role, self._version)
            if available < 2:
                return None
            length, head = buf[pos + 1], 2
            if length & 0x80:
                length &= 0x7F
                while True:
                    if head == available:
                        return None
                    byte = buf[pos + head]
                    length |= (byte & 0x7F) << (7 * (head - 1))
                    head += 1
                    if not byte & 0x80:
                        break
                    if head == 5:
                        raise MalformedPacket("remaining length longer than 4 bytes")
                if byte == 0 and self._v5:
                    raise MalformedPacket("remaining length not in its shortest form")
            end = head + length
            if end > self._max:
                raise PacketTooLarge(f"packet of {end} bytes, over the maximum of {self._max}")
            if available < end:
                return None
            start, end = pos + head, pos + end
            body = buf[start:end] if type(buf) is bytes else bytes(memoryview(buf)[start:end])
            if end == len(buf):
                self._buf, self._pos = b"", 0
            else:
                self._pos = end
            if self._version is not None:
                return reader(first & 15, body, self._v5, self._role)
            self._version = peek_version(body)  # known even if the rest of the CONNECT is refused
            packet = reader(first & 15, body, False, self._role)
            assert isinstance(packet, Connect)
            self._adopt(packet.protocol_version)
            return packet
        except ProtocolError as error:
            self._error = error
            self._buf, self._pos = b"", 0
            raise
