"""The errors of the MQTT codec and state machine. Nothing else ever escapes them.

A `ProtocolError` carries the MQTT 5 reason code to close the connection with (an MQTT 5 peer is
sent a DISCONNECT, or a CONNACK while connecting, with that code; a 3.1.1 peer is just disconnected,
or sent the matching CONNACK return code). These are protocol violations of the peer, not Hawser's
domain errors (`hawser.errors`): a device with wrong credentials is not a protocol error.
"""

from __future__ import annotations

from hawser.mqtt.packets import Reason


class MqttError(Exception):
    """Base of the errors of `hawser.mqtt`."""


class ProtocolError(MqttError):
    """The peer broke the protocol; the connection must be closed with `reason`."""

    reason: Reason = Reason.PROTOCOL_ERROR

    def __init__(self, detail: str, reason: Reason | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class MalformedPacket(ProtocolError):
    """Bytes that are not a well-formed packet (lengths, flags, UTF-8, property types)."""

    reason = Reason.MALFORMED_PACKET


class PacketTooLarge(ProtocolError):
    """A packet larger than the maximum packet size; detected from its fixed header, before its
    body is buffered."""

    reason = Reason.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(ProtocolError):
    """A CONNECT of a protocol level other than 4 (3.1.1) or 5. Answered with a CONNACK of return
    code 1 in 3.1.1's format, which every client version can read."""

    reason = Reason.UNSUPPORTED_PROTOCOL_VERSION


class TooLargeForPeer(MqttError):
    """An outgoing packet exceeds the Maximum Packet Size the peer announced: the spec says to drop
    it (and, for a PUBLISH, act as if it was delivered). Not a protocol error; nothing was sent."""


__all__ = ["MalformedPacket", "MqttError", "PacketTooLarge", "ProtocolError", "TooLargeForPeer",
           "UnsupportedProtocolVersion"]
