"""Bad input to the MQTT device endpoint over a raw socket: hand-written bytes (or packets through our
own codec) that real clients would never send. Each gets the right reason (MQTT 5) or a disconnect,
and the server goes on serving others: a fresh paho device publishes successfully after each."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hawser.bus.embedded import EmbeddedBus
from hawser.mqtt.codec import encode
from hawser.mqtt.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    ProtocolVersion,
    PubAck,
    Publish,
    Reason,
)
from tests.endpoints.mqtt_server import World, publish_ok, running_endpoint
from tests.mqtt_raw import RawClient
from tests.paho import V311 as PAHO_V311

V3, V5 = ProtocolVersion.V311, ProtocolVersion.V5
VERSIONS = [pytest.param(V3, id="v311"), pytest.param(V5, id="v5")]
MAX_PAYLOAD = 4096


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    bus = EmbeddedBus(tmp_path / "events.db", partitions=1)
    await bus.start()
    try:
        async with running_endpoint(bus, max_payload_bytes=MAX_PAYLOAD, connect_timeout_s=1.0) as running:
            yield running
    finally:
        await bus.aclose()


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = value >> 7, value & 0x7F
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def text(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def raw_publish(topic: bytes, version: ProtocolVersion, *, qos: int = 1, packet_id: int = 1,
                payload: bytes = b"x") -> bytes:
    """A PUBLISH written by hand, so that its topic can be anything."""
    body = text(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + (b"\x00" if version is V5 else b"")
    body += payload
    return bytes((0x30 | qos << 1,)) + varint(len(body)) + body


def connect_packet(world: World, version: ProtocolVersion, *, password: bytes = b"pw", **kwargs: object) -> Connect:
    return Connect("raw", version, username=f"d@{world.a}", password=password, **kwargs)  # type: ignore[arg-type]


async def connected(world: World, version: ProtocolVersion) -> RawClient:
    client = await RawClient.open(world.port, version)
    client.send(connect_packet(world, version))
    connack = await client.receive()
    assert isinstance(connack, ConnAck), connack
    assert connack.reason is Reason.SUCCESS
    return client


async def read_to_eof(client: RawClient, timeout: float = 10.0) -> bytes:
    """Every byte the server sends until it closes the connection (fails if it does not close)."""
    data = b""
    async with asyncio.timeout(timeout):
        while chunk := await client.reader.read(65536):
            data += chunk
    return data


async def assert_closed_with(client: RawClient, version: ProtocolVersion, reason: Reason) -> None:
    """MQTT 5: a DISCONNECT with `reason`, then the close; 3.1.1: just the close."""
    packets = await client.until_closed()
    if version is V5:
        assert packets[-1:] == [Disconnect(reason)] or (
            isinstance(packets[-1], Disconnect) and packets[-1].reason is reason), packets
    else:
        assert not any(isinstance(p, Disconnect) for p in packets), packets


# --- before and around CONNECT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x00", b"\x16\x03\x01\x02\x00"]
)
async def test_garbage_before_connect(world: World, garbage: bytes) -> None:
    async with RawClient(*await asyncio.open_connection("127.0.0.1", world.port), V3) as client:
        client.send_bytes(garbage)
        reply = await read_to_eof(client)
    assert not reply.startswith(b"\x20\x02\x00\x00"), "garbage was accepted"
    await publish_ok(world.port, world)


async def test_publish_before_connect(world: World) -> None:
    async with RawClient(*await asyncio.open_connection("127.0.0.1", world.port), V3) as client:
        client.send_bytes(raw_publish(b"t", V3))
        assert await read_to_eof(client) == b""
    await publish_ok(world.port, world)


@pytest.mark.parametrize("name", [b"MQTX", b"MQIsdp", b""])
async def test_wrong_protocol_name(world: World, name: bytes) -> None:
    body = text(name) + b"\x04\x02\x00\x3c" + text(b"raw")
    async with RawClient(*await asyncio.open_connection("127.0.0.1", world.port), V3) as client:
        client.send_bytes(b"\x10" + varint(len(body)) + body)
        reply = await read_to_eof(client)
    assert reply in (b"", b"\x20\x02\x00\x01"), reply  # closed, or "unacceptable protocol version"
    await publish_ok(world.port, world)


async def test_a_socket_that_never_sends_connect_is_closed(world: World) -> None:
    started = time.monotonic()
    async with RawClient(*await asyncio.open_connection("127.0.0.1", world.port), V3) as client:
        assert await read_to_eof(client) == b""
    assert time.monotonic() - started < 5  # the connect timeout of this world is 1 s
    await publish_ok(world.port, world)


@pytest.mark.parametrize(
    ("case", "code"),
    [("wrong password", 4), ("disabled", 5), ("persistent session", 2), ("no credentials", 4)],
)
async def test_v311_connack_return_codes_on_the_wire(world: World, case: str, code: int) -> None:
    packet = {
        "wrong password": connect_packet(world, V3, password=b"nope"),
        "disabled": Connect("raw", V3, username=f"dis@{world.a}", password=b"pw"),
        "persistent session": connect_packet(world, V3, clean_start=False),
        "no credentials": Connect("raw", V3),
    }[case]
    async with RawClient(*await asyncio.open_connection("127.0.0.1", world.port), V3) as client:
        client.send(packet)
        assert await read_to_eof(client) == bytes((0x20, 0x02, 0x00, code))


async def test_password_that_is_not_utf8_is_bad_credentials(world: World) -> None:
    async with RawClient(*await asyncio.open_connection("127.0.0.1", world.port), V5) as client:
        client.send(connect_packet(world, V5, password=b"\xff\xfe"))
        packets = await client.until_closed()
    assert [p.reason for p in packets if isinstance(p, ConnAck)] == [Reason.BAD_USER_NAME_OR_PASSWORD]


@pytest.mark.parametrize("version", VERSIONS)
async def test_two_connects(world: World, version: ProtocolVersion) -> None:
    async with await connected(world, version) as client:
        client.send(connect_packet(world, version))
        await assert_closed_with(client, version, Reason.PROTOCOL_ERROR)
    await publish_ok(world.port, world)


# --- bad publishes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_oversize_remaining_length(world: World, version: ProtocolVersion) -> None:
    limit = world.endpoint.limits.max_packet_size
    async with await connected(world, version) as client:
        client.send_bytes(b"\x32" + varint(limit))  # only the fixed header: refused before any body
        await assert_closed_with(client, version, Reason.PACKET_TOO_LARGE)
    await publish_ok(world.port, world)


async def test_oversize_connect_and_bad_remaining_length(world: World) -> None:
    for header in (b"\x10" + varint(200_000_000), b"\x10\xff\xff\xff\xff\x7f"):
        async with RawClient(*await asyncio.open_connection("127.0.0.1", world.port), V3) as client:
            client.send_bytes(header)
            assert not (await read_to_eof(client)).startswith(b"\x20\x02\x00\x00")
    await publish_ok(world.port, world)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (b"t/\xff\xfe", Reason.MALFORMED_PACKET),  # not UTF-8
        (b"t/\xed\xa0\x80", Reason.MALFORMED_PACKET),  # a UTF-16 surrogate, encoded
        (b"t\x00x", Reason.MALFORMED_PACKET),  # U+0000
        (b"t/+", Reason.TOPIC_NAME_INVALID),
        (b"t/#", Reason.TOPIC_NAME_INVALID),
        (b"", Reason.PROTOCOL_ERROR),  # no topic and no alias
    ],
)
async def test_invalid_publish_topics(world: World, version: ProtocolVersion, topic: bytes, reason: Reason) -> None:
    async with await connected(world, version) as client:
        client.send_bytes(raw_publish(topic, version))
        packets = await client.until_closed()
    assert not any(isinstance(p, PubAck) for p in packets), packets
    if version is V5:
        assert isinstance(packets[-1], Disconnect)
        assert packets[-1].reason in (reason, Reason.TOPIC_NAME_INVALID, Reason.MALFORMED_PACKET,
                                      Reason.PROTOCOL_ERROR, Reason.TOPIC_ALIAS_INVALID)
        if reason is not Reason.PROTOCOL_ERROR:
            assert packets[-1].reason is reason
    await publish_ok(world.port, world)


@pytest.mark.parametrize("version", VERSIONS)
async def test_qos2_is_refused(world: World, version: ProtocolVersion) -> None:
    async with await connected(world, version) as client:
        client.send(Publish("t", b"x", qos=2, packet_id=7))
        await assert_closed_with(client, version, Reason.QOS_NOT_SUPPORTED)
    await publish_ok(world.port, world)


async def test_v5_payload_over_the_limit_but_within_the_packet_is_refused_alone(world: World) -> None:
    async with await connected(world, V5) as client:
        client.send(Publish("t", b"x" * (MAX_PAYLOAD + 1), qos=1, packet_id=3), Publish("t", b"ok", qos=1, packet_id=4))
        first, second = await client.receive(), await client.receive()
    assert isinstance(first, PubAck)
    assert (first.packet_id, first.reason) == (3, Reason.QUOTA_EXCEEDED)
    assert first.properties.reason_string  # says why
    assert second == PubAck(4)


# --- a client that stops reading ---------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_client_that_stops_reading_cannot_grow_server_memory(tmp_path: Path, version: ProtocolVersion) -> None:
    bus = EmbeddedBus(tmp_path / "events.db", partitions=1)
    await bus.start()
    try:
        async with running_endpoint(bus, write_buffer_bytes=1024, read_buffer_bytes=8192) as world:
            await stop_reading(world, version)
    finally:
        await bus.aclose()


async def stop_reading(world: World, version: ProtocolVersion) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its PUBACKs back up fast
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", world.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawClient(reader, writer, version)
    try:
        client.send(connect_packet(world, version))
        assert isinstance(await client.receive(), ConnAck)
        stream = next(s for s in world.listener._streams if s.connection.client_id == "raw")
        transport = stream._transport
        assert transport is not None
        # The kernel's buffers are not what is tested, and autotuned they hold megabytes: keep them
        # small so that the server's own bounds are what pushes back.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        limits = world.endpoint.limits
        packets: list[Packet] = [Publish("t", b"y" * 16, qos=1, packet_id=n) for n in range(1, 501)]
        chunk = b"".join(encode(p, version) for p in packets)
        stalled, sent = False, 0
        deadline = time.monotonic() + 60
        while not stalled and time.monotonic() < deadline:
            writer.write(chunk)
            sent += len(packets)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except TimeoutError:
                stalled = True  # the server stopped reading: TCP pushes back on us
            # Whatever we send, the server holds at most its read bound (plus the one read of up to
            # 256 KiB asyncio makes before the stream can pause) and its write bound.
            assert stream.connection.buffered <= limits.read_limit + 256 * 1024
            assert transport.get_write_buffer_size() <= limits.write_buffer_bytes + 4096
        assert stalled, f"the server kept reading {sent} publishes from a client that reads nothing"
        # Meanwhile it serves everybody else.
        await publish_ok(world.port, world)
        await publish_ok(world.port, world, version=PAHO_V311)
    finally:
        writer.transport.abort()
    await publish_ok(world.port, world)


async def test_a_broken_socket_ends_the_session_with_an_event(world: World) -> None:
    client = await connected(world, V5)
    reader = world.reader(world.a)
    connected_event = await reader.one()
    assert connected_event.type == "io.drogue.connection.v1"
    client.writer.transport.abort()
    disconnected = await reader.one()
    assert (disconnected.type, disconnected.data) == ("io.drogue.connection.v1", b'{"connected":false}')
    assert disconnected.attributes["device"] == "d"


@pytest.mark.parametrize("version", VERSIONS)
async def test_pings_from_a_client_that_stops_reading_cannot_grow_server_memory(
    tmp_path: Path, version: ProtocolVersion
) -> None:
    """Every PINGREQ is answered by the state machine itself: a client that sends nothing else and
    reads nothing must meet the same write bound as one whose PUBACKs back up."""
    bus = EmbeddedBus(tmp_path / "events.db", partitions=1)
    await bus.start()
    try:
        async with running_endpoint(bus, write_buffer_bytes=1024, read_buffer_bytes=8192) as world:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", world.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            client = RawClient(reader, writer, version)
            try:
                client.send(connect_packet(world, version))
                assert isinstance(await client.receive(), ConnAck)
                stream = next(s for s in world.listener._streams if s.connection.client_id == "raw")
                transport = stream._transport
                assert transport is not None
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                chunk = b"\xc0\x00" * 32768
                stalled = False
                deadline = time.monotonic() + 30
                while not stalled and time.monotonic() < deadline:
                    writer.write(chunk)
                    try:
                        await asyncio.wait_for(writer.drain(), 1.0)
                    except TimeoutError:
                        stalled = True
                    assert transport.get_write_buffer_size() <= world.endpoint.limits.write_buffer_bytes + 64 * 1024
                assert stalled, "the server kept answering PINGREQs of a client that reads nothing"
                await publish_ok(world.port, world)
            finally:
                writer.transport.abort()
    finally:
        await bus.aclose()
