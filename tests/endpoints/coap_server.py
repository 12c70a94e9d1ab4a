"""Real-socket harness for the CoAP device endpoint tests: the endpoint on 127.0.0.1:0 (UDP) over the
SQLite registry store and a real bus, aiocoap's client, a raw UDP peer, and readers of the bus."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import OpaqueOption

from auth.devices import DeviceAuthenticator
from command.sessions import DeviceSessions
from endpoints.coap import CoapEndpoint, CoapServer, start_coap_server
from endpoints.ingest import Ingest
from hawser import passwords
from hawser.bus.base import EventBus
from hawser.config import CoapEndpointSettings
from hawser.events import events_topic
from registry.documents import ApplicationDocument, DeviceDocument
from registry.store import RegistryStore
from tests.endpoints.mqtt_server import EventReader
from tests.helpers import unique_name

TIMEOUT = 10.0
AUTH = 4209
COMMAND = 4210
#: How a request is sent: confirmable or not (aiocoap's transport tunings).
CON, NON = aiocoap.Reliable, aiocoap.Unreliable


def basic(user: str, password: str) -> bytes:
    """Option 4209 as Drogue's devices send it."""
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def device_doc(app: str, name: str, *credentials: dict[str, Any], **spec: Any) -> DeviceDocument:
    return DeviceDocument.model_validate({
        "metadata": {"name": name, "application": app},
        "spec": {"authentication": {"credentials": list(credentials)}, **spec},
    })


@dataclass
class World:
    """A running endpoint and a client. Application `a`: devices `d` (password `pw`), `gw` (`gwpw`),
    `th1` (behind `gw`), `other` (behind nobody), `u` (user credential `user1`/`upw`), `dis`
    (disabled, `pw`). Application `b`: `d` (`pwb`)."""

    a: str
    b: str
    bus: EventBus
    store: RegistryStore
    authenticator: DeviceAuthenticator
    sessions: DeviceSessions
    endpoint: CoapEndpoint
    server: CoapServer
    client: Any
    readers: dict[str, EventReader] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.port

    def reader(self, app: str | None = None) -> EventReader:
        return self.readers[app or self.a]

    def request(
        self,
        path: Sequence[str],
        payload: bytes = b"",
        *,
        auth: bytes | None = None,
        query: Sequence[str] = (),
        content_format: int | None = None,
        reliability: Any = CON,
        code: Any = Code.POST,
        options: Sequence[Any] = (),
    ) -> Any:
        """A request message to this endpoint; `auth` goes into option 4209."""
        message = Message(
            code=code, transport_tuning=reliability, payload=payload, uri=f"coap://127.0.0.1:{self.port}"
        )
        message.opt.uri_path = tuple(path)
        message.opt.uri_query = tuple(query)
        if content_format is not None:
            message.opt.content_format = content_format
        if auth is not None:
            message.opt.add_option(OpaqueOption(AUTH, auth))
        for option in options:
            message.opt.add_option(option)
        return message

    async def send(self, message: Any, *, handle_blockwise: bool = True) -> Any:
        return await self.client.request(message, handle_blockwise=handle_blockwise).response

    async def post(self, path: Sequence[str], payload: bytes = b"", **kwargs: Any) -> Any:
        """POST `payload` as device `d` of `a` unless `auth` says otherwise; the response."""
        kwargs.setdefault("auth", basic(f"d@{self.a}", "pw"))
        return await self.send(self.request(path, payload, **kwargs))


async def seed(store: RegistryStore, a: str, b: str) -> None:
    for name in (a, b):
        await store.create_application(ApplicationDocument.model_validate({"metadata": {"name": name}}))
    for doc in (
        device_doc(a, "d", {"pass": "pw"}),
        device_doc(a, "gw", {"pass": "gwpw"}),
        device_doc(a, "th1", gatewaySelector={"matchNames": ["gw"]}),
        device_doc(a, "other"),
        device_doc(a, "u", {"user": {"username": "user1", "password": "upw", "unique": True}}),
        device_doc(a, "dis", {"pass": "pw"}, core={"disabled": True}),
        device_doc(b, "d", {"pass": "pwb"}),
    ):
        await store.create_device(doc.metadata.application or "", doc)


@contextlib.asynccontextmanager
async def running_endpoint(
    bus: EventBus,
    tmp_path: Path,
    *,
    max_payload_bytes: int = 4096,
    max_block_transfers: int = 8,
    read: bool = True,
) -> AsyncIterator[World]:
    """The endpoint with fresh applications `a` and `b` (see `World`) in a fresh SQLite registry;
    with `read`, readers of both applications' topics, opened before anything is published."""
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=1024, parallelism=1))
    a, b = unique_name("a"), unique_name("b")
    store = await RegistryStore.open(f"sqlite+aiosqlite:///{tmp_path / f'{a}.db'}", bus=bus)
    try:
        await seed(store, a, b)
        authenticator = DeviceAuthenticator(store, cache_size=100, cache_ttl_s=60.0)
        sessions = DeviceSessions()
        settings = CoapEndpointSettings(
            host="127.0.0.1", port=0, dtls_port=-1, max_payload_bytes=max_payload_bytes,
            max_block_transfers=max_block_transfers,
        )
        ingest = Ingest(bus, instance="coap-test", max_payload_bytes=max_payload_bytes)
        endpoint = CoapEndpoint(ingest, authenticator, sessions, settings)
        subscriptions = [await bus.subscribe([events_topic(app)]) for app in (a, b)] if read else []
        server = await start_coap_server(endpoint, settings, None)
        client = await aiocoap.Context.create_client_context(transports=["udp6"])
        readers = {app: EventReader(sub) for app, sub in zip((a, b), subscriptions, strict=False)}
        try:
            yield World(a, b, bus, store, authenticator, sessions, endpoint, server, client, readers)
        finally:
            await client.shutdown()
            await server.aclose()
            for subscription in subscriptions:
                await subscription.aclose()
            await authenticator.aclose()
    finally:
        await store.aclose()
        passwords.configure(passwords.KdfCost())


class RawPeer(asyncio.DatagramProtocol):
    """A bare UDP socket to the endpoint: sends exact bytes, collects every datagram that comes back
    (decoded when it is CoAP), for tests that need what aiocoap's client hides (retransmissions with
    the same message id, garbage)."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        self.kept: list[Any] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.replies.put_nowait(Message.decode(data))
        except Exception:  # not CoAP: kept raw, the test decides
            self.replies.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def reply(self, timeout: float = TIMEOUT) -> Any:
        """The next datagram that came back (kept ones first)."""
        if self.kept:
            return self.kept.pop(0)
        async with asyncio.timeout(timeout):
            return await self.replies.get()

    async def matching(self, predicate: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        """The first reply `predicate` holds for; the others are kept, in order, for later calls."""
        for index, reply in enumerate(self.kept):
            if predicate(reply):
                return self.kept.pop(index)
        async with asyncio.timeout(timeout):
            while True:
                reply = await self.replies.get()
                if predicate(reply):
                    return reply
                self.kept.append(reply)

    async def ack_of(self, mid: int, timeout: float = TIMEOUT) -> Any:
        """The ACK of our message `mid`: a piggybacked reply, or empty."""
        return await self.matching(
            lambda r: not isinstance(r, bytes) and r.mtype == Type.ACK and r.mid == mid, timeout
        )

    async def reply_to(self, token: bytes, timeout: float = TIMEOUT) -> Any:
        """The reply carrying `token`, piggybacked or separate (a confirmable one is acknowledged)."""
        reply = await self.matching(
            lambda r: not isinstance(r, bytes) and r.token == token and r.code != Code.EMPTY, timeout
        )
        if reply.mtype == Type.CON:
            self.send(encode(Message(code=Code.EMPTY, payload=b""), mtype=Type.ACK, mid=reply.mid, token=b""))
        return reply

    def drain(self) -> list[Any]:
        """Every reply received and not taken yet."""
        replies, self.kept = self.kept, []
        while not self.replies.empty():
            replies.append(self.replies.get_nowait())
        return replies


def encode(message: Any, *, mtype: Any = None, mid: int = 0, token: bytes = b"") -> bytes:
    """The bytes of `message` as it would be sent with this type, message id and token."""
    message.mtype = Type.CON if mtype is None else mtype
    message.mid = mid
    message.token = token
    return bytes(message.encode())


@contextlib.asynccontextmanager
async def raw_peer(port: int) -> AsyncIterator[RawPeer]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawPeer, remote_addr=("127.0.0.1", port))
    try:
        yield peer
    finally:
        transport.close()
