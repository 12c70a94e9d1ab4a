"""Hypothesis strategies for valid MQTT packets of each version and sender, written from the spec
(sections 2.2.2, 2.4 and 3.x) independently of the codec's own tables, so a wrong table there fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from hawser.mqtt import (
    MAX_UINT16,
    MAX_UINT32,
    MAX_VARINT,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
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
    Role,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
    Will,
)

V311, V5 = ProtocolVersion.V311, ProtocolVersion.V5

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
blobs = st.binary(max_size=24)
u16 = st.integers(0, MAX_UINT16)
u32 = st.integers(0, MAX_UINT32)
flag = st.integers(0, 1)
packet_ids = st.integers(1, MAX_UINT16)
qos = st.integers(0, 2)

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "payload_format_indicator": flag,
    "message_expiry_interval": u32,
    "content_type": texts,
    "response_topic": texts,
    "correlation_data": blobs,
    "session_expiry_interval": u32,
    "assigned_client_identifier": texts,
    "server_keep_alive": u16,
    "authentication_method": texts,
    "authentication_data": blobs,
    "request_problem_information": flag,
    "will_delay_interval": u32,
    "request_response_information": flag,
    "response_information": texts,
    "server_reference": texts,
    "reason_string": texts,
    "receive_maximum": st.integers(1, MAX_UINT16),
    "topic_alias_maximum": u16,
    "topic_alias": st.integers(1, MAX_UINT16),
    "maximum_qos": flag,
    "retain_available": flag,
    "user_properties": st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
    "maximum_packet_size": st.integers(1, MAX_UINT32),
    "wildcard_subscription_available": flag,
    "subscription_identifier_available": flag,
    "shared_subscription_available": flag,
}
_DIAGNOSTICS = ("reason_string", "user_properties")
#: Properties per packet (MQTT 5 section 2.2.2.2), by sender where it matters.
ALLOWED: dict[str, tuple[str, ...]] = {
    "connect": ("session_expiry_interval", "receive_maximum", "maximum_packet_size", "topic_alias_maximum",
                "request_response_information", "request_problem_information", "user_properties",
                "authentication_method", "authentication_data"),
    "will": ("will_delay_interval", "payload_format_indicator", "message_expiry_interval", "content_type",
             "response_topic", "correlation_data", "user_properties"),
    "connack": ("session_expiry_interval", "receive_maximum", "maximum_qos", "retain_available",
                "maximum_packet_size", "assigned_client_identifier", "topic_alias_maximum", "reason_string",
                "user_properties", "wildcard_subscription_available", "subscription_identifier_available",
                "shared_subscription_available", "server_keep_alive", "response_information", "server_reference",
                "authentication_method", "authentication_data"),
    "publish": ("payload_format_indicator", "message_expiry_interval", "topic_alias", "response_topic",
                "correlation_data", "user_properties", "content_type"),
    "ack": _DIAGNOSTICS,
    "subscribe": ("user_properties",),
    "unsubscribe": ("user_properties",),
    "disconnect": (*_DIAGNOSTICS, "server_reference"),
    "auth": ("authentication_method", "authentication_data", *_DIAGNOSTICS),
}

PUBACK_REASONS = (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
PUBREL_REASONS = (0x00, 0x92)
CONNACK_REASONS = (0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                   0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
SUBACK_REASONS = (0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)
UNSUBACK_REASONS = (0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)
DISCONNECT_REASONS = (0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
                      0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2)
AUTH_REASONS = (0x00, 0x18, 0x19)


def reasons(codes: tuple[int, ...]) -> st.SearchStrategy[Reason]:
    return st.sampled_from([Reason(code) for code in codes])


def properties(kind: str, *extra: str, v5: bool = True) -> st.SearchStrategy[Properties]:
    if not v5:
        return st.just(NO_PROPERTIES)
    names = (*ALLOWED[kind], *extra)
    optional = {name: _VALUES[name] for name in names if name in _VALUES}
    if "subscription_identifiers" in names:
        many = 3 if kind == "publish" else 1
        optional["subscription_identifiers"] = st.lists(st.integers(1, MAX_VARINT), min_size=1, max_size=many).map(
            tuple
        )

    def build(values: dict[str, Any]) -> Properties:
        if "authentication_data" in values and "authentication_method" not in values and kind != "connack":
            del values["authentication_data"]  # a protocol error without a method
        return Properties(**values)

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _connect(version: ProtocolVersion) -> st.SearchStrategy[Connect]:
    v5 = version is V5

    @st.composite
    def build(draw: st.DrawFn) -> Connect:
        username = draw(st.none() | texts)
        password = draw(st.none() | blobs) if v5 or username is not None else None
        will = draw(st.none() | st.builds(Will, texts, blobs, qos, st.booleans(), properties("will", v5=v5)))
        return Connect(draw(texts), version, draw(u16), draw(st.booleans()), username, password, will,
                       draw(properties("connect", v5=v5)))

    return build()


def _connack(version: ProtocolVersion) -> st.SearchStrategy[ConnAck]:
    codes = CONNACK_REASONS if version is V5 else (0x00, 0x84, 0x85, 0x88, 0x86, 0x87)
    return st.builds(
        lambda reason, present, props: ConnAck(present and reason is Reason.SUCCESS, reason, props),
        reasons(codes), st.booleans(), properties("connack", v5=version is V5),
    )


def _publish(version: ProtocolVersion, role: Role) -> st.SearchStrategy[Publish]:
    extra = ("subscription_identifiers",) if role is Role.SERVER else ()

    @st.composite
    def build(draw: st.DrawFn) -> Publish:
        level = draw(qos)
        return Publish(draw(texts), draw(st.binary(max_size=64)), level, draw(st.booleans()),
                       level > 0 and draw(st.booleans()), draw(packet_ids) if level else None,
                       draw(properties("publish", *extra, v5=version is V5)))

    return build()


def _ack(cls: type[PubAck | PubRec | PubRel | PubComp], codes: tuple[int, ...], v5: bool) -> st.SearchStrategy[Packet]:
    if not v5:
        return st.builds(cls, packet_ids)
    return st.builds(cls, packet_ids, reasons(codes), properties("ack"))


def _subscribe(version: ProtocolVersion) -> st.SearchStrategy[Subscribe]:
    v5 = version is V5
    options = (
        st.builds(SubscriptionRequest, texts, qos, st.booleans(), st.booleans(), st.integers(0, 2))
        if v5 else st.builds(SubscriptionRequest, texts, qos)
    )
    return st.builds(Subscribe, packet_ids, st.lists(options, min_size=1, max_size=4).map(tuple),
                     properties("subscribe", "subscription_identifiers", v5=v5))


def _suback(version: ProtocolVersion) -> st.SearchStrategy[SubAck]:
    codes = SUBACK_REASONS if version is V5 else (0x00, 0x01, 0x02, 0x80)
    return st.builds(SubAck, packet_ids, st.lists(reasons(codes), min_size=1, max_size=4).map(tuple),
                     properties("ack", v5=version is V5))


def _unsubscribe(version: ProtocolVersion) -> st.SearchStrategy[Unsubscribe]:
    return st.builds(Unsubscribe, packet_ids, st.lists(texts, min_size=1, max_size=4).map(tuple),
                     properties("unsubscribe", v5=version is V5))


def _unsuback(version: ProtocolVersion) -> st.SearchStrategy[UnsubAck]:
    if version is V311:
        return st.builds(UnsubAck, packet_ids)
    return st.builds(UnsubAck, packet_ids, st.lists(reasons(UNSUBACK_REASONS), min_size=1, max_size=4).map(tuple),
                     properties("ack"))


def _disconnect(version: ProtocolVersion, role: Role) -> st.SearchStrategy[Disconnect]:
    if version is V311:
        return st.just(Disconnect())
    extra = ("session_expiry_interval",) if role is Role.CLIENT else ()
    return st.builds(Disconnect, reasons(DISCONNECT_REASONS), properties("disconnect", *extra))


def _auth() -> st.SearchStrategy[Auth]:
    with_method = st.builds(
        lambda method, props: Auth(props[0], Properties(authentication_method=method, **props[1])),
        texts, st.tuples(reasons(AUTH_REASONS), st.fixed_dictionaries(
            {}, optional={"authentication_data": blobs, "reason_string": texts, "user_properties":
                          _VALUES["user_properties"]})),
    )
    return st.just(Auth()) | with_method  # only a bare success may leave the method out


def packet_strategies(version: ProtocolVersion, role: Role) -> dict[str, st.SearchStrategy[Packet]]:
    """Packet type name -> strategy, for every packet `role` sends in `version`."""
    v5 = version is V5
    both: dict[str, st.SearchStrategy[Any]] = {
        "PUBLISH": _publish(version, role),
        "PUBACK": _ack(PubAck, PUBACK_REASONS, v5),
        "PUBREC": _ack(PubRec, PUBACK_REASONS, v5),
        "PUBREL": _ack(PubRel, PUBREL_REASONS, v5),
        "PUBCOMP": _ack(PubComp, PUBREL_REASONS, v5),
        "DISCONNECT": _disconnect(version, role),
    }
    if v5:
        both["AUTH"] = _auth()
    own: dict[str, Callable[[], st.SearchStrategy[Any]]] = (
        {"CONNECT": lambda: _connect(version), "SUBSCRIBE": lambda: _subscribe(version),
         "UNSUBSCRIBE": lambda: _unsubscribe(version), "PINGREQ": lambda: st.just(PingReq())}
        if role is Role.CLIENT else
        {"CONNACK": lambda: _connack(version), "SUBACK": lambda: _suback(version),
         "UNSUBACK": lambda: _unsuback(version), "PINGRESP": lambda: st.just(PingResp())}
    )
    return {**both, **{name: make() for name, make in own.items()}}


def client_packets(version: ProtocolVersion) -> st.SearchStrategy[Packet]:
    """Any packet a client sends after its CONNECT."""
    strategies = packet_strategies(version, Role.CLIENT)
    return st.one_of([s for name, s in strategies.items() if name != "CONNECT"])


def connects(version: ProtocolVersion) -> st.SearchStrategy[Connect]:
    return _connect(version)
