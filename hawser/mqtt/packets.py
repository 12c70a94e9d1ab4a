"""The MQTT 3.1.1 and 5 control packets as frozen values, with the reason codes and properties of MQTT 5.

Nothing here does I/O or knows the wire format (`hawser.mqtt.codec` does). One value type serves both
versions: fields MQTT 3.1.1 lacks (properties, most reason codes) are simply left at their defaults when
a 3.1.1 packet is decoded, and ignored (or mapped, for CONNACK and SUBACK codes) when one is encoded.
Constructors refuse values no version can carry (a QoS of 3, a packet id of 0 on a QoS 1 publish).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ProtocolVersion(enum.IntEnum):
    """The protocol level byte of CONNECT."""

    V311 = 4
    V5 = 5


class PacketType(enum.IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Reason(enum.IntEnum):
    """MQTT 5 reason codes (section 2.4). 3.1.1 CONNACK return codes and SUBACK failures are mapped
    from these by the encoder."""

    SUCCESS = 0x00  # also NORMAL_DISCONNECTION and GRANTED_QOS_0
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    REAUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

    @property
    def is_error(self) -> bool:
        return self >= 0x80


#: Largest packet identifier, topic alias, receive maximum (two-byte integers).
MAX_UINT16 = 0xFFFF
#: Largest value of a four-byte integer property (expiry intervals, maximum packet size).
MAX_UINT32 = 0xFFFF_FFFF
#: Largest value of a variable byte integer (remaining length, subscription identifier).
MAX_VARINT = 268_435_455


@dataclass(frozen=True, slots=True)
class Properties:
    """The MQTT 5 properties of a packet; every field is absent (None, or empty) by default.

    Which properties a packet type may carry is checked by the decoder; values only against their
    wire type here."""

    payload_format_indicator: int | None = None  # 0x01, byte (0 bytes, 1 UTF-8)
    message_expiry_interval: int | None = None  # 0x02, four-byte integer
    content_type: str | None = None  # 0x03
    response_topic: str | None = None  # 0x08
    correlation_data: bytes | None = None  # 0x09
    subscription_identifiers: tuple[int, ...] = ()  # 0x0B, variable byte integer, repeatable in PUBLISH
    session_expiry_interval: int | None = None  # 0x11
    assigned_client_identifier: str | None = None  # 0x12
    server_keep_alive: int | None = None  # 0x13, two-byte integer
    authentication_method: str | None = None  # 0x15
    authentication_data: bytes | None = field(default=None, repr=False)  # 0x16; a credential: not in `repr`
    request_problem_information: int | None = None  # 0x17, byte
    will_delay_interval: int | None = None  # 0x18
    request_response_information: int | None = None  # 0x19, byte
    response_information: str | None = None  # 0x1A
    server_reference: str | None = None  # 0x1C
    reason_string: str | None = None  # 0x1F
    receive_maximum: int | None = None  # 0x21, two-byte integer, not 0
    topic_alias_maximum: int | None = None  # 0x22
    topic_alias: int | None = None  # 0x23, not 0
    maximum_qos: int | None = None  # 0x24, byte (0 or 1)
    retain_available: int | None = None  # 0x25, byte (0 or 1)
    user_properties: tuple[tuple[str, str], ...] = ()  # 0x26, repeatable, order kept
    maximum_packet_size: int | None = None  # 0x27, not 0
    wildcard_subscription_available: int | None = None  # 0x28
    subscription_identifier_available: int | None = None  # 0x29
    shared_subscription_available: int | None = None  # 0x2A


NO_PROPERTIES = Properties()


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")


def _check_packet_id(packet_id: int) -> None:
    if not 1 <= packet_id <= MAX_UINT16:
        raise ValueError(f"packet identifier must be 1 to 65535, not {packet_id}")


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        _check_qos(self.qos)


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    protocol_version: ProtocolVersion = ProtocolVersion.V5
    keep_alive: int = 60
    clean_start: bool = True  # "clean session" in 3.1.1
    #: Never shown in `repr` either: the MQTT integration takes a bearer token as the user name.
    username: str | None = field(default=None, repr=False)
    #: Binary in MQTT; never shown in `repr`.
    password: bytes | None = field(default=None, repr=False)
    will: Will | None = None
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        if not 0 <= self.keep_alive <= MAX_UINT16:
            raise ValueError("keep alive must be 0 to 65535 seconds")


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool = False
    reason: Reason = Reason.SUCCESS
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    #: Present exactly when qos > 0.
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        _check_qos(self.qos)
        if self.qos == 0:
            if self.packet_id is not None or self.dup:
                raise ValueError("a QoS 0 publish has no packet identifier and no DUP flag")
        elif self.packet_id is None:
            raise ValueError("a QoS 1 or 2 publish needs a packet identifier")
        else:
            _check_packet_id(self.packet_id)


@dataclass(frozen=True, slots=True)
class _Ack:
    """PUBACK, PUBREC, PUBREL and PUBCOMP share their shape."""

    packet_id: int
    reason: Reason = Reason.SUCCESS
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)


@dataclass(frozen=True, slots=True)
class PubAck(_Ack):
    pass


@dataclass(frozen=True, slots=True)
class PubRec(_Ack):
    pass


@dataclass(frozen=True, slots=True)
class PubRel(_Ack):
    pass


@dataclass(frozen=True, slots=True)
class PubComp(_Ack):
    pass


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """One topic filter of a SUBSCRIBE with its options (the options beyond QoS are MQTT 5)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0

    def __post_init__(self) -> None:
        _check_qos(self.qos)
        if self.retain_handling not in (0, 1, 2):
            raise ValueError("retain handling must be 0, 1 or 2")


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[SubscriptionRequest, ...]
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)
        if not self.subscriptions:
            raise ValueError("a SUBSCRIBE needs at least one topic filter")


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    #: One per topic filter, in order: GRANTED_QOS_n (SUCCESS is QoS 0) or an error. In 3.1.1 every
    #: error is written as 0x80.
    reasons: tuple[Reason, ...]
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)
        if not self.topic_filters:
            raise ValueError("an UNSUBSCRIBE needs at least one topic filter")


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int
    #: One per topic filter in MQTT 5; 3.1.1 has none (decoded as empty, not written).
    reasons: tuple[Reason, ...] = ()
    properties: Properties = NO_PROPERTIES

    def __post_init__(self) -> None:
        _check_packet_id(self.packet_id)


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    #: SUCCESS is "normal disconnection". 3.1.1's DISCONNECT carries neither reason nor properties.
    reason: Reason = Reason.SUCCESS
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """MQTT 5 only."""

    reason: Reason = Reason.SUCCESS
    properties: Properties = NO_PROPERTIES


Packet = (
    Connect | ConnAck | Publish | PubAck | PubRec | PubRel | PubComp | Subscribe | SubAck | Unsubscribe | UnsubAck
    | PingReq | PingResp | Disconnect | Auth
)

__all__ = [
    "MAX_UINT16",
    "MAX_UINT32",
    "MAX_VARINT",
    "NO_PROPERTIES",
    "Auth",
    "ConnAck",
    "Connect",
    "Disconnect",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "ProtocolVersion",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "Reason",
    "SubAck",
    "Subscribe",
    "SubscriptionRequest",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]
