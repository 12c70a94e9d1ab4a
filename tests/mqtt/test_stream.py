"""`hawser.mqtt.stream` on its own, over a real socket on 127.0.0.1: the transport's bounds and waits
with a handler written for the test (the services' handlers are tested in tests/endpoints and
tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

from hawser.config import TlsSettings
from hawser.mqtt.codec import encode
from hawser.mqtt.packets import Connect, ProtocolVersion, Publish
from hawser.mqtt.stream import MqttStream, StreamLimits, start_listener
from hawser.tls import certificate_files, server_context

TIMEOUT = 10.0
LIMITS = StreamLimits(max_packet_size=65536, connect_timeout_s=5.0, write_buffer_bytes=1024)


async def open_client(port: int, receive_buffer: int = 4096) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def fill_until_paused(stream: MqttStream) -> None:
    """Write publishes to a peer that does not read until the transport pushes back."""
    transport = stream._transport
    assert transport is not None
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    async with asyncio.timeout(TIMEOUT):
        while not stream._write_paused:
            stream.send(Publish("t", b"x" * 8192))
            await asyncio.sleep(0)  # let the coalesced write go out


async def serve_one(handler: Callable[[MqttStream], Awaitable[None]]) -> tuple[int, Callable[[], Awaitable[None]]]:
    listener = await start_listener(handler, "127.0.0.1", 0, limits=LIMITS, name="stream-test")
    return listener.port, listener.aclose


async def test_every_concurrent_drain_wakes_when_the_peer_reads_again() -> None:
    """Several coroutines of one connection (a read loop, a flow per subscription, a command
    writer) wait in `drain` at once: each must wake when the peer reads again, none forever."""
    paused, drained = asyncio.Event(), asyncio.Event()

    async def handler(stream: MqttStream) -> None:
        await stream.read_connect()
        stream.accept()
        await fill_until_paused(stream)
        paused.set()
        await asyncio.wait_for(asyncio.gather(stream.drain(), stream.drain(), stream.drain()), TIMEOUT)
        drained.set()

    port, aclose = await serve_one(handler)
    try:
        reader, writer = await open_client(port)
        writer.write(encode(Connect("c", ProtocolVersion.V5), ProtocolVersion.V5))
        await asyncio.wait_for(paused.wait(), TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            while not drained.is_set():
                await reader.read(65536)
        writer.close()
    finally:
        await aclose()


async def test_a_tls_handshake_finishing_after_aclose_gets_no_handler(tmp_path: Path) -> None:
    """A socket accepted before the listener closed may finish its TLS handshake after `aclose`
    returned: it is closed at once, not served by a handler task nobody awaits any more."""
    handled = asyncio.Event()

    async def handler(stream: MqttStream) -> None:
        handled.set()
        await stream.read_connect()

    context = server_context(TlsSettings(), tmp_path)
    cert, _ = certificate_files(TlsSettings(), tmp_path)
    listener = await start_listener(handler, "127.0.0.1", 0, limits=LIMITS, ssl=context, name="stream-tls-test")
    sock: socket.socket | None = socket.create_connection(("127.0.0.1", listener.port))
    try:
        server = listener._server
        assert server is not None
        async with asyncio.timeout(TIMEOUT):  # accepted (its transport attached), handshake not begun
            while not server._active_count:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        await listener.aclose()
        client_context = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(sock=sock, ssl=client_context, server_hostname="localhost")
        sock = None
        try:
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        assert not handled.is_set()
        assert not listener._tasks
    finally:
        if sock is not None:
            sock.close()
