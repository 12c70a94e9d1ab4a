"""The packet identifiers in flight on one connection, both ways: the client's QoS 1/2 publishes we
have not answered yet (bounded by our Receive Maximum in MQTT 5), and ours the client has not
acknowledged yet. Pure bookkeeping for `ServerConnection`."""

from __future__ import annotations

from hawser.mqtt.errors import ProtocolError
from hawser.mqtt.packets import MAX_UINT16, Packet, PubAck, PubComp, Publish, PubRec, Reason


def _ends_flow(packet: Packet) -> int | None:
    """The packet id whose flow `packet` (an acknowledgement, either way) completes, if it does: a
    PUBACK, a PUBCOMP, or a PUBREC refusing the message."""
    kind = type(packet)
    if kind is PubAck or kind is PubComp or (kind is PubRec and packet.reason.is_error):  # type: ignore[union-attr]
        return packet.packet_id  # type: ignore[union-attr]
    return None


class Window:
    __slots__ = ("_last", "received", "sent")

    def __init__(self) -> None:
        self.received: set[int] = set()
        self.sent: set[int] = set()
        self._last = 0

    def receive(self, packet: Publish, v5: bool, receive_maximum: int) -> None:
        """Count the client's QoS 1/2 publish in, or raise for an id in use or a full window (MQTT 5).
        A 3.1.1 publish re-sent with DUP under an id in flight is a retransmission: counted once."""
        packet_id = packet.packet_id
        assert packet_id is not None
        if packet_id in self.received:
            if packet.dup and not v5:
                return
            raise ProtocolError(f"packet identifier {packet_id} in use", Reason.PACKET_IDENTIFIER_IN_USE)
        if v5 and len(self.received) >= receive_maximum:
            raise ProtocolError("more QoS 1/2 publishes than the Receive Maximum", Reason.RECEIVE_MAXIMUM_EXCEEDED)
        self.received.add(packet_id)

    def acknowledged_by_client(self, packet: Packet) -> None:
        packet_id = _ends_flow(packet)
        if packet_id is not None:
            self.sent.discard(packet_id)

    def sent_by_server(self, packet: Packet, *, delivered: bool) -> None:
        """Our packet went out (or was dropped as too large, which counts as delivered)."""
        if type(packet) is Publish:
            packet_id = packet.packet_id
            if packet_id is not None:
                if delivered:
                    self.sent.add(packet_id)
                else:
                    self.sent.discard(packet_id)
            return
        packet_id = _ends_flow(packet)
        if packet_id is not None:
            self.received.discard(packet_id)

    def reserve(self) -> int:
        """The next packet id not in flight from us, reserved until the client acknowledges it."""
        for _ in range(MAX_UINT16):
            self._last = self._last % MAX_UINT16 + 1
            if self._last not in self.sent:
                self.sent.add(self._last)
                return self._last
        raise RuntimeError("all 65,535 packet identifiers are in use")
