"""A raw MQTT client written with Hawser's own codec (`hawser.mqtt.codec`), for what real clients
will not do: bad input, hand-made packets and bytes, PUBLISHes left un-acknowledged, a client that
stops reading. It sends exactly what it is told and never acknowledges anything by itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from hawser.mqtt.codec import Decoder, Role, encode
from hawser.mqtt.packets import Connect, Packet, Properties, ProtocolVersion, Subscribe, SubscriptionRequest
from tests.helpers import unique_name

TIMEOUT = 10.0


class RawClient:
    """Packets (or bytes) to the server, and what comes back, decoded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: ProtocolVersion) -> None:
        self.reader, self.writer, self.version = reader, writer, version
        self.decoder = Decoder(version, role=Role.SERVER)

    @classmethod
    async def open(cls, port: int, version: ProtocolVersion = ProtocolVersion.V5, *,
                   receive_buffer: int | None = None) -> RawClient:
        """A connection to 127.0.0.1:`port`, nothing sent yet. A small `receive_buffer` (SO_RCVBUF and
        the reader's limit) makes a client that stops reading push back on the server early."""
        sock = socket.socket()
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer or 2**16)
        return cls(reader, writer, version)

    @classmethod
    async def connect(cls, port: int, username: str | None, *, version: ProtocolVersion = ProtocolVersion.V5,
                      password: bytes | None = None, receive_buffer: int | None = None,
                      properties: Properties | None = None) -> RawClient:
        """`open`, then send a CONNECT (a fresh client id, no keep-alive); read the CONNACK with `receive()`."""
        client = await cls.open(port, version, receive_buffer=receive_buffer)
        client.send(Connect(unique_name("raw"), version, keep_alive=0, username=username, password=password,
                            properties=properties or Properties()))
        return client

    def send(self, *packets: Packet) -> None:
        for packet in packets:
            self.writer.write(encode(packet, self.version))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    def subscribe(self, topic_filter: str, qos: int = 1, packet_id: int = 1) -> None:
        self.send(Subscribe(packet_id, (SubscriptionRequest(topic_filter, qos),), Properties()))

    async def receive(self, timeout: float = TIMEOUT) -> Packet | None:
        """The next packet from the server; None once it closed the connection."""
        async with asyncio.timeout(timeout):
            while (packet := self.decoder.next_packet()) is None:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self.decoder.feed(data)
            return packet

    async def until_closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Every packet the server sends until it closes the connection (fails if it does not)."""
        packets: list[Packet] = []
        while (packet := await self.receive(timeout)) is not None:
            packets.append(packet)
        return packets

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
