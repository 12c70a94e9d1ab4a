"""`ServerConnection` joined to an in-memory client: connecting, the QoS 1 window, topic aliases, pings,
and every way a client can break the protocol, with what the server answers."""

from __future__ import annotations

import pytest

from hawser.mqtt import (
    ConnAck,
    Connect,
    Disconnect,
    MalformedPacket,
    PacketTooLarge,
    PingReq,
    PingResp,
    Properties,
    ProtocolError,
    ProtocolVersion,
    PubAck,
    Publish,
    Reason,
    ServerConnection,
    State,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    TooLargeForPeer,
    UnsupportedProtocolVersion,
    Will,
    encode,
)
from tests.mqtt.memory import MemoryClient

V311, V5 = ProtocolVersion.V311, ProtocolVersion.V5
BOTH = pytest.mark.parametrize("version", [V311, V5])


def test_accept_v5_announces_the_limits() -> None:
    client = MemoryClient(V5, ServerConnection(max_packet_size=4096, receive_maximum=8, topic_alias_maximum=4))
    connect = Connect("dev", V5, 30, properties=Properties(receive_maximum=3, maximum_packet_size=900))
    ack = client.connect(connect, Properties(session_expiry_interval=0, reason_string="hi"))
    assert ack == ConnAck(properties=Properties(
        receive_maximum=8, maximum_packet_size=4096, topic_alias_maximum=4, maximum_qos=1, retain_available=0,
        session_expiry_interval=0, reason_string="hi"))
    server = client.server
    assert (server.state, server.version, server.client_id, server.keep_alive) == (State.CONNECTED, V5, "dev", 30)
    assert (server.peer_receive_maximum, server.peer_maximum_packet_size) == (3, 900)


def test_accept_311() -> None:
    client = MemoryClient(V311)
    assert client.connect() == ConnAck()
    assert client.server.peer_receive_maximum == 65535
    assert client.server.peer_maximum_packet_size is None


def test_empty_client_id_v5_is_assigned() -> None:
    client = MemoryClient(V5)
    ack = client.connect(Connect("", V5, clean_start=False))
    assert client.server.client_id
    assert ack.properties.assigned_client_identifier == client.server.client_id


def test_empty_client_id_311_clean_session_is_assigned_internally() -> None:
    client = MemoryClient(V311)
    assert client.connect(Connect("", V311)) == ConnAck()
    assert client.server.client_id


def test_empty_client_id_311_persistent_is_reported_and_refused_by_the_caller() -> None:
    client = MemoryClient(V311)
    client.send(Connect("", V311, clean_start=False))
    assert client.server.client_id == ""
    reply = client.server.refuse(Reason.CLIENT_IDENTIFIER_NOT_VALID)
    assert reply == b"\x20\x02\x00\x02"
    assert client.server.state is State.CLOSED


@pytest.mark.parametrize(
    ("reason", "code"),
    [(Reason.UNSUPPORTED_PROTOCOL_VERSION, 1), (Reason.CLIENT_IDENTIFIER_NOT_VALID, 2),
     (Reason.SERVER_UNAVAILABLE, 3), (Reason.SERVER_BUSY, 3), (Reason.UNSPECIFIED_ERROR, 3),
     (Reason.BAD_USER_NAME_OR_PASSWORD, 4), (Reason.NOT_AUTHORIZED, 5), (Reason.BANNED, 5)],
)
def test_refuse_311_return_codes(reason: Reason, code: int) -> None:
    client = MemoryClient(V311)
    client.send(Connect("d", V311))
    assert client.receive(client.server.refuse(reason, "ignored in 3.1.1")) == [ConnAck(reason=V311_READ[code])]


V311_READ = {1: Reason.UNSUPPORTED_PROTOCOL_VERSION, 2: Reason.CLIENT_IDENTIFIER_NOT_VALID,
             3: Reason.SERVER_UNAVAILABLE, 4: Reason.BAD_USER_NAME_OR_PASSWORD, 5: Reason.NOT_AUTHORIZED}


def test_refuse_v5_with_reason_string() -> None:
    client = MemoryClient(V5)
    client.send(Connect("d", V5))
    reply = client.receive(client.server.refuse(Reason.BAD_USER_NAME_OR_PASSWORD, "wrong password"))
    props = Properties(reason_string="wrong password")
    assert reply == [ConnAck(reason=Reason.BAD_USER_NAME_OR_PASSWORD, properties=props)]
    assert client.server.state is State.CLOSED
    assert client.server.next_packet() is None


def test_nothing_after_connect_is_returned_before_accept() -> None:
    client = MemoryClient(V5)
    got = client.send(Connect("d", V5), Publish("t", b"early"))
    assert len(got) == 1
    assert client.server.state is State.CONNECTING
    assert client.server.buffered > 0
    client.receive(client.server.accept())
    assert client.send() == [Publish("t", b"early")]


@BOTH
def test_publish_qos1_inflight_and_puback(version: ProtocolVersion) -> None:
    client = MemoryClient(version)
    client.connect()
    server = client.server
    got = client.send(Publish("temp", b"21", 1, packet_id=1), Publish("temp", b"22", 1, packet_id=2),
                      Publish("temp", b"q0"))
    assert got == [Publish("temp", b"21", 1, packet_id=1), Publish("temp", b"22", 1, packet_id=2),
                   Publish("temp", b"q0")]
    assert server.inflight == 2
    assert client.receive(server.send(PubAck(1))) == [PubAck(1)]
    assert server.inflight == 1
    assert server.send(PubAck(1)) == b"\x40\x02\x00\x01"  # unknown id: sent, nothing released twice
    assert server.inflight == 1
    assert client.send(Publish("temp", b"23", 1, packet_id=1)) == [Publish("temp", b"23", 1, packet_id=1)]
    assert server.inflight == 2
    # The hot path's shortcut is the same acknowledgement, byte for byte, with the same bookkeeping.
    assert server.acknowledge(2) == encode(PubAck(2), version)
    assert client.receive(server.acknowledge(1)) == [PubAck(1)]
    assert server.inflight == 0


def test_receive_maximum_exceeded_v5() -> None:
    client = MemoryClient(V5, ServerConnection(receive_maximum=2))
    client.connect()
    client.send(Publish("t", b"", 1, packet_id=1), Publish("t", b"", 1, packet_id=2))
    error, reply = client.refused(Publish("t", b"", 1, packet_id=3))
    assert error.reason is Reason.RECEIVE_MAXIMUM_EXCEEDED
    assert reply == [Disconnect(Reason.RECEIVE_MAXIMUM_EXCEEDED, Properties(reason_string=error.detail))]
    assert client.server.state is State.CLOSED


def test_311_has_no_receive_maximum_but_counts() -> None:
    client = MemoryClient(V311, ServerConnection(receive_maximum=2))
    client.connect()
    assert len(client.send(*(Publish("t", b"", 1, packet_id=i) for i in range(1, 6)))) == 5
    assert client.server.inflight == 5


@BOTH
def test_packet_id_in_use(version: ProtocolVersion) -> None:
    client = MemoryClient(version)
    client.connect()
    client.send(Publish("t", b"", 1, packet_id=9))
    error, reply = client.refused(Publish("t", b"", 1, packet_id=9))
    assert error.reason is Reason.PACKET_IDENTIFIER_IN_USE
    # 0x91 is not a DISCONNECT reason code: the connection is closed with "protocol error" instead
    assert reply == ([Disconnect(Reason.PROTOCOL_ERROR, Properties(reason_string=error.detail))]
                     if version is V5 else [])


def test_311_retransmission_with_dup_is_returned_not_counted() -> None:
    client = MemoryClient(V311)
    client.connect()
    client.send(Publish("t", b"x", 1, packet_id=9))
    assert client.send(Publish("t", b"x", 1, dup=True, packet_id=9)) == [Publish("t", b"x", 1, dup=True, packet_id=9)]
    assert client.server.inflight == 1


def test_topic_alias() -> None:
    client = MemoryClient(V5, ServerConnection(topic_alias_maximum=2))
    client.connect()
    first = Publish("sensors/temp", b"1", properties=Properties(topic_alias=2, content_type="text/plain"))
    again = Publish("", b"2", properties=Properties(topic_alias=2, content_type="text/plain"))
    bare = Publish("", b"3", properties=Properties(topic_alias=2))
    assert client.send(first, again, bare) == [
        Publish("sensors/temp", b"1", properties=Properties(content_type="text/plain")),
        Publish("sensors/temp", b"2", properties=Properties(content_type="text/plain")),
        Publish("sensors/temp", b"3"),
    ]
    replaced = Publish("other", b"4", properties=Properties(topic_alias=2))
    assert client.send(replaced, bare) == [Publish("other", b"4"), Publish("other", b"3")]


@pytest.mark.parametrize(
    ("publish", "reason"),
    [
        (Publish("t", properties=Properties(topic_alias=3)), Reason.TOPIC_ALIAS_INVALID),  # above the maximum
        (Publish("", properties=Properties(topic_alias=1)), Reason.TOPIC_ALIAS_INVALID),  # never set
        (Publish(""), Reason.TOPIC_NAME_INVALID),
        (Publish("a/+/b"), Reason.TOPIC_NAME_INVALID),
        (Publish("a/#", b"", 1, packet_id=1), Reason.TOPIC_NAME_INVALID),
        (Publish("t", b"", 2, packet_id=1), Reason.QOS_NOT_SUPPORTED),
        (Publish("t", b"", retain=True), Reason.RETAIN_NOT_SUPPORTED),
        (Publish("t", b"\xff", properties=Properties(payload_format_indicator=1)), Reason.PAYLOAD_FORMAT_INVALID),
    ],
)
def test_publish_refused_v5(publish: Publish, reason: Reason) -> None:
    client = MemoryClient(V5, ServerConnection(topic_alias_maximum=2))
    client.connect()
    error, reply = client.refused(publish)
    assert error.reason is reason
    assert reply == [Disconnect(reason, Properties(reason_string=error.detail))]


def test_topic_alias_0_is_refused() -> None:
    client = MemoryClient(V5)
    client.connect()
    error, reply = client.refused(raw=b"\x30\x07\x00\x01t\x03\x23\x00\x00")
    assert error.reason is Reason.TOPIC_ALIAS_INVALID
    assert [type(p) for p in reply] == [Disconnect]


@pytest.mark.parametrize(
    ("publish", "reason"),
    [(Publish("a/+"), Reason.TOPIC_NAME_INVALID), (Publish(""), Reason.TOPIC_NAME_INVALID),
     (Publish("t", b"", 2, packet_id=1), Reason.QOS_NOT_SUPPORTED)],
)
def test_publish_refused_311_closes_silently(publish: Publish, reason: Reason) -> None:
    client = MemoryClient(V311)
    client.connect()
    error, reply = client.refused(publish)
    assert error.reason is reason
    assert reply == []


def test_311_retain_is_passed_on() -> None:
    client = MemoryClient(V311)
    client.connect()
    assert client.send(Publish("t", b"x", retain=True)) == [Publish("t", b"x", retain=True)]


def test_qos2_flow_when_allowed() -> None:
    client = MemoryClient(V5, ServerConnection(maximum_qos=2))
    ack = client.connect()
    assert ack.properties.maximum_qos is None
    client.send(Publish("t", b"", 2, packet_id=4))
    from hawser.mqtt import PubComp, PubRec, PubRel

    assert client.receive(client.server.send(PubRec(4))) == [PubRec(4)]
    assert client.server.inflight == 1
    assert client.send(PubRel(4)) == [PubRel(4)]
    client.server.send(PubComp(4))
    assert client.server.inflight == 0


@BOTH
def test_invalid_utf8_topic(version: ProtocolVersion) -> None:
    client = MemoryClient(version)
    client.connect()
    error, reply = client.refused(raw=b"\x30\x05\x00\x02\xc3\x28\x00" if version is V5 else b"\x30\x04\x00\x02\xc3\x28")
    assert isinstance(error, MalformedPacket)
    assert reply == ([Disconnect(Reason.MALFORMED_PACKET, Properties(reason_string=error.detail))]
                     if version is V5 else [])


@BOTH
def test_oversize_remaining_length_is_refused_from_the_header(version: ProtocolVersion) -> None:
    client = MemoryClient(version, ServerConnection(max_packet_size=1024))
    client.connect()
    error, reply = client.refused(raw=b"\x30\xff\xff\x03")  # announces 65,535 bytes; none of them sent
    assert isinstance(error, PacketTooLarge)
    assert [type(p) for p in reply] == ([Disconnect] if version is V5 else [])
    assert not reply or reply[0].reason is Reason.PACKET_TOO_LARGE  # type: ignore[union-attr]


@BOTH
def test_pingreq_is_answered(version: ProtocolVersion) -> None:
    client = MemoryClient(version)
    client.connect()
    assert client.send(PingReq(), PingReq()) == [PingReq(), PingReq()]
    assert client.receive(client.server.data_to_send()) == [PingResp(), PingResp()]
    assert client.server.data_to_send() == b""


@BOTH
def test_disconnect(version: ProtocolVersion) -> None:
    client = MemoryClient(version)
    client.connect()
    assert client.send(Disconnect(), Publish("after", b"")) == [Disconnect()]
    assert client.server.state is State.CLOSED
    assert client.server.close() == b""
    assert client.server.send(PubAck(1)) == b""


def test_disconnect_session_expiry_after_zero_is_a_protocol_error() -> None:
    client = MemoryClient(V5)
    client.connect()
    error, _ = client.refused(Disconnect(properties=Properties(session_expiry_interval=60)))
    assert error.reason is Reason.PROTOCOL_ERROR


@BOTH
def test_second_connect(version: ProtocolVersion) -> None:
    client = MemoryClient(version)
    client.connect()
    error, reply = client.refused(Connect("again", version))
    assert error.reason is Reason.PROTOCOL_ERROR
    assert [type(p) for p in reply] == ([Disconnect] if version is V5 else [])


def test_publish_before_connect() -> None:
    server = ServerConnection()
    server.receive_data(encode(Publish("t", b"x"), V311))
    with pytest.raises(ProtocolError) as caught:
        server.next_packet()
    assert server.state is State.CLOSED
    assert server.error_reply(caught.value) == b""


@pytest.mark.parametrize("wire", [
    b"\x10\x0e\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x00",  # MQTT 3.1
    b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x00\x00",  # a level from the future
])
def test_unsupported_version_gets_a_311_connack(wire: bytes) -> None:
    server = ServerConnection()
    server.receive_data(wire)
    with pytest.raises(UnsupportedProtocolVersion) as caught:
        server.next_packet()
    assert server.error_reply(caught.value) == b"\x20\x02\x00\x01"
    assert server.error_reply(caught.value) == b""  # only once


def test_malformed_v5_connect_gets_a_v5_connack() -> None:
    client = MemoryClient(V5)
    error, reply = client.refused(raw=b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x00\x00\x01c")
    assert error.reason is Reason.PROTOCOL_ERROR  # receive maximum 0
    assert reply == [ConnAck(reason=Reason.PROTOCOL_ERROR, properties=Properties(reason_string=error.detail))]


def test_malformed_311_connect_closes_silently() -> None:
    client = MemoryClient(V311)
    error, reply = client.refused(raw=b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01c")
    assert isinstance(error, MalformedPacket)
    assert reply == []


@pytest.mark.parametrize(
    ("will", "reason"),
    [(Will("a/#", b""), Reason.TOPIC_NAME_INVALID), (Will("w", b"", 2), Reason.QOS_NOT_SUPPORTED),
     (Will("w", b"", 0, True), Reason.RETAIN_NOT_SUPPORTED),
     (Will("w", b"\xff", properties=Properties(payload_format_indicator=1)), Reason.PAYLOAD_FORMAT_INVALID)],
)
def test_will_refused_v5(will: Will, reason: Reason) -> None:
    client = MemoryClient(V5)
    error, reply = client.refused(Connect("d", V5, will=will))
    assert error.reason is reason
    assert reply == [ConnAck(reason=reason, properties=Properties(reason_string=error.detail))]


def test_no_problem_information_means_terse_replies() -> None:
    client = MemoryClient(V5)
    client.connect(Connect("d", V5, properties=Properties(request_problem_information=0)))
    client.send(Publish("t", b"", 1, packet_id=1))
    noisy = PubAck(1, Reason.QUOTA_EXCEEDED, Properties(reason_string="slow down", user_properties=(("a", "b"),)))
    assert client.receive(client.server.send(noisy)) == [PubAck(1, Reason.QUOTA_EXCEEDED)]
    assert client.server.inflight == 0
    error = ProtocolError("detail")
    assert client.receive(client.server.error_reply(error)) == [Disconnect(Reason.PROTOCOL_ERROR)]


def test_server_publish_ids_and_client_puback() -> None:
    client = MemoryClient(V5)
    client.connect()
    server = client.server
    first, second = server.next_packet_id(), server.next_packet_id()
    assert (first, second) == (1, 2)
    assert client.receive(server.send(Publish("app/a", b"e", 1, packet_id=first))) == [
        Publish("app/a", b"e", 1, packet_id=first)]
    assert server.outgoing_inflight == 2
    assert client.send(PubAck(first)) == [PubAck(first)]
    assert server.outgoing_inflight == 1
    server.send(Publish("app/a", b"e", 1, packet_id=second))
    for _ in range(65_533):
        server.next_packet_id()
    assert server.next_packet_id() == first  # wrapped around; the un-acknowledged 2 is skipped
    with pytest.raises(RuntimeError):
        server.next_packet_id()  # every id reserved, none acknowledged


def test_too_large_for_peer() -> None:
    client = MemoryClient(V5)
    client.connect(Connect("d", V5, properties=Properties(maximum_packet_size=40)))
    server = client.server
    packet_id = server.next_packet_id()
    with pytest.raises(TooLargeForPeer):
        server.send(Publish("t", b"x" * 100, 1, packet_id=packet_id))
    assert server.outgoing_inflight == 0  # dropped "as if delivered"
    client.send(Subscribe(3, (SubscriptionRequest("x"),)))
    wordy = SubAck(3, (Reason.NOT_AUTHORIZED,), Properties(reason_string="r" * 100))
    assert client.receive(server.send(wordy)) == [SubAck(3, (Reason.NOT_AUTHORIZED,))]


def test_subscribe_with_invalid_filters_is_returned() -> None:
    client = MemoryClient(V5)
    client.connect()
    subscribe = Subscribe(1, (SubscriptionRequest("a/#/b"), SubscriptionRequest("$share//x")))
    assert client.send(subscribe) == [subscribe]


def test_no_local_on_shared_subscription_is_a_protocol_error() -> None:
    client = MemoryClient(V5)
    client.connect()
    error, _ = client.refused(Subscribe(1, (SubscriptionRequest("$share/g/app/a", no_local=True),)))
    assert error.reason is Reason.PROTOCOL_ERROR


def test_auth_without_method_at_connect() -> None:
    client = MemoryClient(V5)
    client.connect()
    from hawser.mqtt import Auth

    error, _ = client.refused(Auth())
    assert error.reason is Reason.PROTOCOL_ERROR


@BOTH
def test_close(version: ProtocolVersion) -> None:
    client = MemoryClient(version)
    client.connect()
    data = client.server.close(Reason.SERVER_SHUTTING_DOWN)
    assert client.receive(data) == ([Disconnect(Reason.SERVER_SHUTTING_DOWN)] if version is V5 else [])
    assert client.server.close() == b""
    assert client.server.state is State.CLOSED


def test_peer_closed() -> None:
    client = MemoryClient(V5)
    client.connect()
    client.server.receive_data(encode(PingReq(), V5)[:1])
    client.server.receive_data(b"")
    assert client.server.next_packet() is None
    assert client.server.state is State.CLOSED


def test_misuse_is_a_bug() -> None:
    server = ServerConnection()
    with pytest.raises(RuntimeError):
        server.send(PubAck(1))
    with pytest.raises(RuntimeError):
        server.accept()
    client = MemoryClient(V5, server)
    client.connect()
    with pytest.raises(ValueError):  # noqa: PT011
        server.send(Connect("x"))
    with pytest.raises(ValueError):  # noqa: PT011
        ServerConnection(receive_maximum=0)


def test_close_with_reason_string_and_send_disconnect() -> None:
    client = MemoryClient(V5)
    client.connect()
    data = client.server.close(Reason.SESSION_TAKEN_OVER, "another connection took over")
    assert client.receive(data) == [
        Disconnect(Reason.SESSION_TAKEN_OVER, Properties(reason_string="another connection took over"))]
    other = MemoryClient(V5)
    other.connect()
    packet = Disconnect(Reason.SERVER_SHUTTING_DOWN, Properties(server_reference="elsewhere:1883"))
    assert other.receive(other.server.send(packet)) == [packet]
    assert other.server.state is State.CLOSED
    assert other.server.close(Reason.SERVER_SHUTTING_DOWN) == b""  # once only
    old = MemoryClient(V311)
    old.connect()
    assert old.server.send(Disconnect(Reason.SERVER_SHUTTING_DOWN)) == b""  # 3.1.1 servers send none


def test_disconnect_reason_string_yields_to_the_maximum_packet_size() -> None:
    client = MemoryClient(V5)
    client.connect(Connect("d", V5, properties=Properties(maximum_packet_size=10)))
    data = client.server.close(Reason.SERVER_SHUTTING_DOWN, "a reason string far longer than ten bytes")
    assert client.receive(data) == [Disconnect(Reason.SERVER_SHUTTING_DOWN)]


def test_311_cannot_refuse_a_publish_with_a_puback() -> None:
    client = MemoryClient(V311)
    client.connect()
    client.send(Publish("t", b"", 1, packet_id=5))
    with pytest.raises(ValueError):  # noqa: PT011 - 3.1.1 has no refusing PUBACK: the caller disconnects
        client.server.send(PubAck(5, Reason.NOT_AUTHORIZED))
    assert client.server.inflight == 1
    assert client.receive(client.server.send(PubAck(5))) == [PubAck(5)]


def test_credentials_never_appear_in_a_connect_repr() -> None:
    """The MQTT integration takes a bearer token as the user name: a CONNECT in a log line or a
    failing assertion must show neither it nor the password."""
    connect = Connect("c", V5, username="token-s3cret", password=b"pass-s3cret",
                      properties=Properties(authentication_method="JWT", authentication_data=b"auth-s3cret"))
    assert "s3cret" not in repr(connect)
    assert "s3cret" not in str(connect)
