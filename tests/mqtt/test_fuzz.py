"""Random and mutated byte streams into `ServerConnection`, in random read sizes, with every CONNECT
accepted so that later packets are decoded too: only `ProtocolError` may come out, every read settles
quickly, and what waits in the buffer stays within one maximum packet plus one read."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hawser.mqtt import (
    Connect,
    Packet,
    ProtocolError,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    ServerConnection,
    State,
    SubAck,
    Subscribe,
    TooLargeForPeer,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)
from tests.mqtt.strategies import client_packets, connects

MAX_PACKET = 512
#: Wall-clock bound for one read to be fully processed (generous: a slow CI machine, a cold cache).
READ_DEADLINE_S = 1.0
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _answer(server: ServerConnection, packet: Packet) -> None:
    """Act like a lenient caller: accept, acknowledge, answer, so the machine goes on to the next state."""
    # A client may announce a Maximum Packet Size too small for a reply: it is dropped, as documented.
    with contextlib.suppress(TooLargeForPeer):
        _reply(server, packet)
    server.data_to_send()


def _reply(server: ServerConnection, packet: Packet) -> None:
    if server.state is State.CONNECTING:
        server.accept()
    elif isinstance(packet, Publish) and packet.packet_id is not None:
        server.send(PubRec(packet.packet_id) if packet.qos == 2 else PubAck(packet.packet_id))
    elif isinstance(packet, PubRel):
        server.send(PubComp(packet.packet_id))
    elif isinstance(packet, Subscribe):
        server.send(SubAck(packet.packet_id, (Reason.SUCCESS,) * len(packet.subscriptions)))
    elif isinstance(packet, Unsubscribe):
        server.send(UnsubAck(packet.packet_id, (Reason.SUCCESS,) * len(packet.topic_filters)))


def drive(stream: bytes, sizes: list[int]) -> None:
    server = ServerConnection(max_packet_size=MAX_PACKET, receive_maximum=65535, maximum_qos=2)
    position, turn = 0, 0
    while position < len(stream) or turn == 0:
        size = sizes[turn % len(sizes)] if sizes else len(stream)
        chunk = stream[position : position + max(size, 1)]
        position += len(chunk)
        turn += 1
        server.receive_data(chunk)
        assert server.buffered <= MAX_PACKET + len(chunk)
        started = time.monotonic()
        for _ in range(len(stream) + 2):  # every packet is at least 2 bytes: more turns mean a loop
            try:
                packet = server.next_packet()
            except ProtocolError as error:
                server.error_reply(error)  # must be able to answer whatever it raised
                assert server.state is State.CLOSED
                return
            if packet is None:
                break
            _answer(server, packet)
        else:
            raise AssertionError("next_packet kept returning packets beyond what the bytes can hold")
        assert time.monotonic() - started < READ_DEADLINE_S
        assert server.buffered < MAX_PACKET or server.state is not State.CONNECTED
    server.receive_data(b"")
    assert server.next_packet() is None


read_sizes = st.lists(st.integers(1, 300), max_size=8)


@FUZZ
@given(stream=st.binary(max_size=2048), sizes=read_sizes)
def test_random_bytes(stream: bytes, sizes: list[int]) -> None:
    drive(stream, sizes)


@FUZZ
@given(stream=st.binary(max_size=1024), sizes=read_sizes, version=st.sampled_from(ProtocolVersion))
def test_random_bytes_after_a_connect(stream: bytes, sizes: list[int], version: ProtocolVersion) -> None:
    drive(encode(Connect("fuzz", version), version) + stream, sizes)


def _tame(packet: Packet) -> Packet:
    """A publish or will the state machine accepts (no retain, a plain topic, no alias, no payload format)."""
    if isinstance(packet, Connect) and packet.will is not None:
        will = packet.will
        tamed = Will(_plain(will.topic), will.payload, min(will.qos, 1), False,
                     replace(will.properties, payload_format_indicator=None))
        return replace(packet, will=tamed)
    if isinstance(packet, Publish):
        props = replace(packet.properties, topic_alias=None, payload_format_indicator=None)
        return replace(packet, topic=_plain(packet.topic), retain=False, properties=props)
    return packet


def _plain(topic: str) -> str:
    return topic.replace("+", "p").replace("#", "h") or "t"


@st.composite
def valid_streams(draw: st.DrawFn) -> tuple[bytes, int]:
    """Encoded CONNECT + packets (often tamed, so the stream goes deep), and where the CONNECT ends."""
    version = draw(st.sampled_from(ProtocolVersion))
    packets = [draw(connects(version)), *draw(st.lists(client_packets(version), max_size=8))]
    if draw(st.booleans()):
        packets = [_tame(p) for p in packets]
    connect = encode(packets[0], version)
    return connect + b"".join(encode(p, version) for p in packets[1:]), len(connect)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    stream, connect_end = draw(valid_streams())
    data = bytearray(stream)
    # Mostly mutate after the CONNECT, so that the mutations reach the packets of a connected session.
    low = connect_end if draw(st.integers(0, 3)) else 0
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "delete", "insert", "duplicate"]))
        if len(data) <= low:
            break
        at = draw(st.integers(low, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x10, 0x30, 0x82, 0xC0, 0xE0, 0xF0]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            end = draw(st.integers(at, len(data)))
            data[at:at] = data[at:end]
    return bytes(data)


@FUZZ
@given(stream=mutated(), sizes=read_sizes)
def test_mutated_valid_streams(stream: bytes, sizes: list[int]) -> None:
    drive(stream, sizes)


@settings(max_examples=100, deadline=None)
@given(stream=valid_streams(), sizes=read_sizes)
def test_valid_streams(stream: tuple[bytes, int], sizes: list[int]) -> None:
    """Unmutated streams reach the state machine's own rules (aliases, QoS, topics, retain)."""
    drive(stream[0], sizes)
