"""MQTT 3.1.1 packets built by hand for the benchmarks' load generators, and a frame splitter.

Independent of `hawser.mqtt` on purpose: the load must not depend on the code it measures, and
these few fixed shapes (CONNECT, QoS 1 PUBLISH, SUBSCRIBE, DISCONNECT) are built once and reused.
"""

from __future__ import annotations

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, DISCONNECT = 0x20, 0x30, 0x40, 0x90, 0xD0, 0xE0


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _varint(len(body)) + body


def connect(client_id: str, username: str = "", password: str = "", *, keep_alive: int = 60) -> bytes:
    """A clean-session 3.1.1 CONNECT (user name and password only when given)."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    body = _string(b"MQTT") + bytes([4, flags]) + keep_alive.to_bytes(2, "big") + _string(client_id.encode())
    if username:
        body += _string(username.encode())
    if password:
        body += _string(password.encode())
    return _packet(0x10, body)


def connect_v5(client_id: str, username: str, password: str = "", *, keep_alive: int = 60,
               receive_maximum: int = 0) -> bytes:
    """A clean-start MQTT 5 CONNECT, optionally announcing a Receive Maximum."""
    flags = 0x02 | 0x80 | (0x40 if password else 0)
    props = b"\x21" + receive_maximum.to_bytes(2, "big") if receive_maximum else b""
    body = (_string(b"MQTT") + bytes([5, flags]) + keep_alive.to_bytes(2, "big") + _varint(len(props)) + props
            + _string(client_id.encode()) + _string(username.encode()))
    if password:
        body += _string(password.encode())
    return _packet(0x10, body)


def publish_qos1(topic: str, packet_id: int, payload: bytes) -> bytes:
    """A 3.1.1 QoS 1 PUBLISH (for MQTT 5 an empty property length follows the packet id)."""
    return _packet(0x32, _string(topic.encode()) + packet_id.to_bytes(2, "big") + payload)


def publish_qos1_v5(topic: str, packet_id: int, payload: bytes) -> bytes:
    return _packet(0x32, _string(topic.encode()) + packet_id.to_bytes(2, "big") + b"\x00" + payload)


def subscribe_v5(packet_id: int, topic_filter: str, qos: int = 1) -> bytes:
    return _packet(0x82, packet_id.to_bytes(2, "big") + b"\x00" + _string(topic_filter.encode()) + bytes([qos]))


def puback(packet_id: int) -> bytes:
    return bytes([PUBACK, 2]) + packet_id.to_bytes(2, "big")


DISCONNECT_PACKET = bytes([DISCONNECT, 0])


class Frames:
    """Splits a byte stream into (first byte, body) frames; partial frames wait for more bytes."""

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> bool:
        """True while part of a frame waits for more bytes."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        frames: list[tuple[int, bytes]] = []
        pos, size = 0, len(buffer)
        while pos + 2 <= size:
            length, shift, index = 0, 0, pos + 1
            while True:
                if index >= size:
                    self._buffer = buffer[pos:]
                    return frames
                byte = buffer[index]
                length |= (byte & 0x7F) << shift
                index += 1
                if not byte & 0x80:
                    break
                shift += 7
            if index + length > size:
                break
            frames.append((buffer[pos], buffer[index:index + length]))
            pos = index + length
        self._buffer = buffer[pos:]
        return frames


def connack_code(body: bytes) -> int:
    """The return code (3.1.1) or reason code (5) of a CONNACK body."""
    return body[1] if len(body) >= 2 else 0xFF
