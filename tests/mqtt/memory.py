"""An MQTT client in memory, joined to a `ServerConnection` with no sockets and no event loop (h11's way):
it encodes what it sends, and reads what the server answers with a client-side `Decoder`."""

from __future__ import annotations

import pytest

from hawser.mqtt import (
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Decoder,
    Packet,
    Properties,
    ProtocolError,
    ProtocolVersion,
    Role,
    ServerConnection,
    encode,
)


class MemoryClient:
    def __init__(self, version: ProtocolVersion, server: ServerConnection | None = None) -> None:
        self.version = version
        self.server = server or ServerConnection()
        self.decoder = Decoder(version, role=Role.SERVER)

    def send(self, *packets: Packet) -> list[Packet]:
        """Send packets (or raw bytes via `send_raw`); return what the server's `next_packet` gave."""
        return self.send_raw(b"".join(encode(p, self.version) for p in packets))

    def send_raw(self, data: bytes) -> list[Packet]:
        self.server.receive_data(data)
        got = []
        while (packet := self.server.next_packet()) is not None:
            got.append(packet)
        return got

    def receive(self, data: bytes) -> list[Packet]:
        """Read bytes the server produced."""
        self.decoder.feed(data)
        got = []
        while (packet := self.decoder.next_packet()) is not None:
            got.append(packet)
        return got

    def connect(self, connect: Connect | None = None, properties: Properties = NO_PROPERTIES) -> ConnAck:
        packet = connect or Connect("device-1", self.version)
        assert self.send(packet) == [packet]
        [ack] = self.receive(self.server.accept(properties))
        assert isinstance(ack, ConnAck)
        return ack

    def refused(self, *packets: Packet, raw: bytes = b"") -> tuple[ProtocolError, list[Packet]]:
        """Send what the server must refuse; return its error and what its `error_reply` told us."""
        with pytest.raises(ProtocolError) as caught:
            self.send_raw(b"".join(encode(p, self.version) for p in packets) + raw)
        return caught.value, self.receive(self.server.error_reply(caught.value))
