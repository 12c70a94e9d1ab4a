"""Protocol rules `ServerConnection` applies that need no connection state: checking a will, building
the CONNACK of an accepted connection, the packet that answers a protocol error, and fitting an
outgoing packet to what the client asked for (its Maximum Packet Size, no problem information)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from hawser.mqtt._wire import CONNACK_REASONS, DISCONNECT_REASONS
from hawser.mqtt.codec import encode
from hawser.mqtt.errors import MalformedPacket, ProtocolError, TooLargeForPeer
from hawser.mqtt.packets import (
    NO_PROPERTIES,
    ConnAck,
    Disconnect,
    Packet,
    Properties,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    SubAck,
    UnsubAck,
    Will,
)
from hawser.mqtt.topics import check_topic_name

#: Packets whose properties are only a reason string and user properties, diagnostics a server leaves
#: out when the client asked for no problem information [MQTT-3.1.2-29] or they would make the packet
#: exceed the client's Maximum Packet Size (which drops them from any packet but PUBLISH).
_DIAGNOSTIC_ONLY = (PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck)


def check_utf8(payload: bytes, what: str) -> None:
    try:
        payload.decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is marked UTF-8 but is not", Reason.PAYLOAD_FORMAT_INVALID) from None


def check_will(will: Will, v5: bool, maximum_qos: int) -> None:
    """A will's topic must be a valid name; in MQTT 5 its QoS and retain must be what we announce
    (3.1.1 has no way to refuse them: they are left to the caller)."""
    check_topic_name(will.topic)
    if v5:
        if will.qos > maximum_qos:
            raise ProtocolError(f"will QoS {will.qos} is not supported", Reason.QOS_NOT_SUPPORTED)
        if will.retain:
            raise ProtocolError("retain is not available", Reason.RETAIN_NOT_SUPPORTED)
        if will.properties.payload_format_indicator == 1:
            check_utf8(will.payload, "the will payload")


def accepting_properties(
    properties: Properties, *, receive_maximum: int, maximum_packet_size: int, topic_alias_maximum: int,
    maximum_qos: int, assigned_client_id: str | None,
) -> Properties:
    """The caller's CONNACK properties with the limits the state machine enforces written over them."""
    return replace(
        properties,
        receive_maximum=receive_maximum,
        maximum_packet_size=maximum_packet_size,
        topic_alias_maximum=topic_alias_maximum or None,
        maximum_qos=maximum_qos if maximum_qos < 2 else None,
        retain_available=0,
        assigned_client_identifier=assigned_client_id or properties.assigned_client_identifier,
    )


def error_packet(error: ProtocolError, *, connected: bool, problem_info: bool) -> ConnAck | Disconnect:
    """The MQTT 5 packet telling a client why it is being closed: CONNACK before it was accepted,
    DISCONNECT after; a reason the packet cannot carry becomes malformed packet / protocol error."""
    fallback = Reason.MALFORMED_PACKET if isinstance(error, MalformedPacket) else Reason.PROTOCOL_ERROR
    allowed = DISCONNECT_REASONS if connected else CONNACK_REASONS
    reason = error.reason if error.reason in allowed and error.reason.is_error else fallback
    props = Properties(reason_string=error.detail[:200]) if problem_info else NO_PROPERTIES
    return Disconnect(reason, props) if connected else ConnAck(reason=reason, properties=props)


def with_properties(packet: Packet, properties: Properties) -> Packet:
    return replace(cast(Any, packet), properties=properties)  # type: ignore[no-any-return]


def encode_for_peer(packet: Packet, version: ProtocolVersion, limit: int | None, problem_info: bool) -> bytes:
    """`packet` as bytes the client accepts, or TooLargeForPeer; diagnostics are dropped if need be."""
    props: Properties = getattr(packet, "properties", NO_PROPERTIES)
    strippable = isinstance(packet, _DIAGNOSTIC_ONLY)
    if props is not NO_PROPERTIES and strippable and not problem_info:
        packet = with_properties(packet, replace(props, reason_string=None, user_properties=()))
    data = encode(packet, version)
    if limit is not None and len(data) > limit:
        if props is not NO_PROPERTIES and not isinstance(packet, Publish):
            data = encode(with_properties(packet, replace(props, reason_string=None, user_properties=())), version)
        if len(data) > limit:
            raise TooLargeForPeer(f"{type(packet).__name__} of {len(data)} bytes, over the client's {limit}")
    return data
