"""CoAP over DTLS with pre-shared keys over real sockets: the record peek (pure), the transport with
a site that echoes the verified identity, and the device endpoint through it with aiocoap's DTLS
client and libcoap's `coap-client-openssl`, over the SQLite registry and the embedded durable log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import OpaqueOption
from aiocoap.transports.tinydtls import DTLS_EVENT_CONNECTED
from prometheus_client import REGISTRY

from auth.devices import DeviceAuthenticator
from auth.psk import PskIdentity, PskKeys
from command.sessions import DeviceSessions
from endpoints._coap_dtls import dtls_sessions, start_dtls_context
from endpoints._coap_dtls_peer import DtlsPeer, handshake_messages, psk_identity_of, starts_handshake
from endpoints.coap import CoapEndpoint, start_coap_server
from endpoints.ingest import Ingest
from hawser import passwords
from hawser.bus.embedded import EmbeddedBus
from hawser.config import CoapEndpointSettings
from hawser.events import events_topic
from registry.documents import ApplicationDocument
from registry.store import RegistryStore
from registry.values import DeviceInfo, PskCredential
from tests.auth.fakes import MemoryDirectory
from tests.endpoints.coap_server import device_doc
from tests.endpoints.mqtt_server import EventReader
from tests.helpers import eventually, free_port, unique_name

# A required dependency (aiocoap's DTLS needs it): skipped only where it could not be built.
pytest.importorskip("DTLSSocket")

TIMEOUT = 10.0
KEY = b"d-secret-key-01"  # text, as `coap-client -k` takes it; at most 16 bytes (tinydtls)


# --- records (pure) ---------------------------------------------------------------------------------


def record(content_type: int, body: bytes, *, epoch: int = 0) -> bytes:
    return bytes([content_type]) + b"\xfe\xfd" + epoch.to_bytes(2) + bytes(6) + len(body).to_bytes(2) + body


def handshake(kind: int, body: bytes, *, total: int | None = None, offset: int = 0) -> bytes:
    size = len(body)
    return bytes([kind]) + (total or size).to_bytes(3) + bytes(2) + offset.to_bytes(3) + size.to_bytes(3) + body


def key_exchange(identity: bytes) -> bytes:
    return record(22, handshake(16, len(identity).to_bytes(2) + identity))


def client_hello(cookie: bytes = b"", random: bytes = bytes(32)) -> bytes:
    """A DTLS 1.2 ClientHello offering TLS_PSK_WITH_AES_128_CCM_8 with extended master secret
    (the cookie covers the rest: send the same `random` again with it)."""
    extensions = b"\x00\x17\x00\x00"
    body = (b"\xfe\xfd" + random + b"\x00" + bytes([len(cookie)]) + cookie + b"\x00\x04\xc0\xa8\x00\xff"
            + b"\x01\x00" + len(extensions).to_bytes(2) + extensions)
    return record(22, handshake(1, body))


CCS = record(20, b"\x01")
FINISHED = record(22, os.urandom(40), epoch=1)


@pytest.mark.parametrize(
    ("datagram", "identity"),
    [
        pytest.param(key_exchange(b"dev@app"), b"dev@app", id="alone"),
        pytest.param(key_exchange(b"dev@app") + CCS + FINISHED, b"dev@app", id="with-ccs-and-finished"),
        pytest.param(record(22, handshake(11, b"cert") + handshake(16, b"\x00\x03abc")), b"abc", id="second-message"),
        pytest.param(CCS + key_exchange(b"x@y"), b"x@y", id="second-record"),
        pytest.param(key_exchange(b""), b"", id="empty-identity"),
        pytest.param(key_exchange(b"dev@app")[:-1], None, id="truncated-record"),
        pytest.param(record(22, handshake(16, b"\x00\x07dev@app")[:-2]), None, id="truncated-message"),
        pytest.param(record(22, handshake(16, b"\x00\x07dev@app"), epoch=1), None, id="epoch-1"),
        pytest.param(record(23, handshake(16, b"\x00\x07dev@app")), None, id="application-data"),
        pytest.param(record(22, handshake(16, b"\x00\x07dev@", total=9)), None, id="fragment"),
        pytest.param(record(22, handshake(16, b"\x41\x04" + bytes(64))), None, id="ecdhe-key-exchange"),
        pytest.param(record(22, handshake(16, b"\x00\x09dev@app")), None, id="identity-length-wrong"),
        pytest.param(record(22, handshake(1, b"\x00\x07dev@app")), None, id="client-hello"),
        pytest.param(CCS * 15 + key_exchange(b"x@y"), b"x@y", id="sixteenth-record"),
        pytest.param(CCS * 16 + key_exchange(b"x@y"), None, id="beyond-sixteen-records"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\x16\xfe", None, id="short"),
    ],
)
def test_the_psk_identity_is_read_from_a_client_key_exchange(datagram: bytes, identity: bytes | None) -> None:
    assert psk_identity_of(datagram) == identity


def test_only_a_client_hello_opens_a_handshake() -> None:
    assert starts_handshake(client_hello())
    assert next(handshake_messages(client_hello()))[0] == 1
    assert not starts_handshake(key_exchange(b"dev@app"))
    assert not starts_handshake(CCS + client_hello())
    assert not starts_handshake(record(22, handshake(1, b"hello"), epoch=1))
    assert not starts_handshake(client_hello()[:20])
    assert not starts_handshake(os.urandom(64))


# --- one peer, without sockets: whose session it is -------------------------------------------------------


class PeerHost:
    """What a `DtlsPeer` needs from its server, recording what it is told."""

    def __init__(self, keys: PskKeys) -> None:
        from DTLSSocket import dtls

        self.keys, self.dtls, self.hostinfo_local = keys, dtls, "127.0.0.1"
        self.connected: list[DtlsPeer] = []

    def send(self, addr: Any, data: bytes) -> None:
        pass

    def received_plaintext(self, peer: DtlsPeer, data: bytes) -> None:
        pass

    def peer_connected(self, peer: DtlsPeer) -> None:
        self.connected.append(peer)

    def peer_closed(self, peer: DtlsPeer, exc: Exception) -> None:
        pass


async def test_a_session_is_whose_key_opened_it_and_stays_so(directory: MemoryDirectory) -> None:
    """The claims appear once the handshake is done, a renegotiation cannot switch them to another
    identity whose key is cached, and block-wise uploads of two identities from one address (a
    NAT reusing a port) are told apart."""
    directory.add_device("app", "other", PskCredential(KEY))
    keys = PskKeys(directory, cache_size=10, cache_ttl_s=60.0)
    assert await keys.prefetch(b"other@app") is not None
    host = PeerHost(keys)
    first, second = DtlsPeer(host, ("127.0.0.1", 4000)), DtlsPeer(host, ("127.0.0.1", 4000))
    try:
        first.keys.pin(b"dev@app", await keys.prefetch(b"dev@app"))
        assert b"dev@app" in first.keys
        assert first.keys[b"dev@app"] == KEY  # what tinydtls asks mid-handshake
        assert first.authenticated_claims == [], "not before the handshake is done"
        first._event(0, DTLS_EVENT_CONNECTED)  # tinydtls: the handshake is done
        assert host.connected == [first]
        assert first.authenticated_claims == [PskIdentity("app", "dev")]
        assert b"other@app" not in first.keys, "a renegotiation keeps the identity"
        assert b"dev@app" in first.keys
        assert second.keys[b"other@app"] == KEY
        assert first.blockwise_key != second.blockwise_key
    finally:
        for peer in (first, second):
            peer.close(aiocoap.error.LibraryShutdown("test over"))
        await keys.aclose()


# --- the transport, with a site echoing the verified identity ------------------------------------------


class Echo(aiocoap.resource.Resource):  # type: ignore[misc]
    async def render_post(self, request: Any) -> Any:
        return Message(code=Code.CHANGED, payload=repr(list(request.remote.authenticated_claims)).encode())


def echo_site() -> Any:
    site = aiocoap.resource.Site()
    site.add_resource(["v1", "telemetry"], Echo())
    return site


class DtlsClient:
    """aiocoap's DTLS client with one identity and key. It keeps every connection it used until it
    is closed: aiocoap closes a connection once nothing references it, and one that the cyclic
    garbage collector finds still open warns from its finalizer (an error in this suite)."""

    def __init__(self, context: Any, port: int) -> None:
        self.context = context
        self.port = port
        self.remotes: list[Any] = []

    async def post(
        self, payload: bytes = b"hi", *, path: Sequence[str] = ("v1", "telemetry"), query: Sequence[str] = (),
        timeout: float = TIMEOUT,
    ) -> Any:
        message = Message(code=Code.POST, payload=payload, uri=f"coaps://127.0.0.1:{self.port}")
        message.opt.uri_path = tuple(path)
        message.opt.uri_query = tuple(query)
        request = self.context.request(message)
        try:
            async with asyncio.timeout(timeout):
                response = await request.response
        finally:
            if message.remote is not None:
                self.remotes.append(message.remote)
        self.remotes.append(response.remote)
        return response


@contextlib.asynccontextmanager
async def dtls_client(port: int, identity: str, key: bytes) -> AsyncIterator[DtlsClient]:
    context = await aiocoap.Context.create_client_context(transports=["tinydtls"])
    context.client_credentials.load_from_dict(
        {f"coaps://127.0.0.1:{port}/*": {"dtls": {"psk": key, "client-identity": identity.encode()}}}
    )
    try:
        yield DtlsClient(context, port)
    finally:
        await context.shutdown()


async def publish(port: int, identity: str, key: bytes, payload: bytes = b"hi", **kwargs: Any) -> Any:
    async with dtls_client(port, identity, key) as client:
        return await client.post(payload, **kwargs)


async def refused(port: int, identity: str, key: bytes, *, timeout: float = 2.0) -> None:
    """The handshake fails: a fatal alert (NetworkError) or, for a wrong key, silence."""
    with pytest.raises((aiocoap.error.NetworkError, TimeoutError)):
        await publish(port, identity, key, timeout=timeout)


def pool_of(context: Any) -> Any:
    return context.request_interfaces[0].token_interface.message_interface._pool


@contextlib.asynccontextmanager
async def echo_server(
    directory: MemoryDirectory, *, host: str = "127.0.0.1", port: int = 0, max_sessions: int = 8
) -> AsyncIterator[tuple[Any, int, PskKeys]]:
    keys = PskKeys(directory, cache_size=100, cache_ttl_s=60.0)
    context, bound = await start_dtls_context(echo_site(), host, port, keys, max_sessions=max_sessions)
    try:
        yield context, bound, keys
    finally:
        await context.shutdown()
        await keys.aclose()


@pytest.fixture
def directory() -> MemoryDirectory:
    directory = MemoryDirectory()
    directory.add_app("app")
    directory.add_device("app", "dev", PskCredential(KEY))
    return directory


async def test_the_site_gets_the_verified_identity_as_claims(directory: MemoryDirectory) -> None:
    async with echo_server(directory) as (_, port, _keys):
        response = await publish(port, "dev@app", KEY)
    assert response.code == Code.CHANGED
    assert response.payload == repr([PskIdentity("app", "dev")]).encode()


async def test_exactly_the_configured_port_is_bound_and_only_once(directory: MemoryDirectory) -> None:
    wanted = free_port()
    async with echo_server(directory, port=wanted) as (_, port, _keys):
        assert port == wanted
        assert (await publish(port, "dev@app", KEY)).code == Code.CHANGED
        with pytest.raises(OSError, match="in use"):
            await start_dtls_context(echo_site(), "127.0.0.1", port, PskKeys(directory, cache_size=1, cache_ttl_s=1),
                                     max_sessions=1)
    async with echo_server(directory, port=0) as (_, port, _keys):
        assert port not in (0, 5684)


async def test_an_any_address_is_served(directory: MemoryDirectory) -> None:
    async with echo_server(directory, host="0.0.0.0") as (_, port, _keys):
        assert (await publish(port, "dev@app", KEY)).code == Code.CHANGED


async def test_at_least_one_session_is_needed(directory: MemoryDirectory) -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        await start_dtls_context(echo_site(), "127.0.0.1", 0, PskKeys(directory, cache_size=1, cache_ttl_s=1),
                                 max_sessions=0)


async def test_a_handshake_waits_for_its_key_and_one_lookup_serves_all(directory: MemoryDirectory) -> None:
    """tinydtls asks for keys synchronously: the ClientKeyExchange, and the ChangeCipherSpec and
    Finished behind it (aiocoap's client sends each in its own datagram), wait for the lookup."""
    gate, original = asyncio.Event(), directory.get_device_info

    async def slow(application: str, device: str) -> Any:
        await gate.wait()
        return await original(application, device)

    directory.get_device_info = slow  # type: ignore[method-assign]
    async with echo_server(directory) as (context, port, keys):
        posts = [asyncio.ensure_future(publish(port, "dev@app", KEY)) for _ in range(3)]
        held = pool_of(context)._held
        await eventually(lambda: len(held) == 3 and all(len(h) >= 3 for h in held.values()))
        gate.set()
        responses = await asyncio.gather(*posts)
        assert [r.code for r in responses] == [Code.CHANGED] * 3
        assert keys.lookups == 1
        assert not held


async def test_wrong_keys_and_unknown_identities_fail_the_handshake(directory: MemoryDirectory) -> None:
    directory.add_device("app", "long", PskCredential(b"k" * 17))
    directory.add_device("app", "x" * 29, PskCredential(KEY))  # `x...x@app`: 33 bytes, over tinydtls's 32
    async with echo_server(directory) as (context, port, _keys):
        await refused(port, "dev@app", b"wrong-key-01234")
        await refused(port, "nobody@app", KEY)
        await refused(port, "dev@nowhere", KEY)
        await refused(port, "long@app", b"k" * 16)  # too long for tinydtls: refused, never copied
        await refused(port, "dev-app", KEY)
        # aiocoap's tinydtls client cannot even send it: libcoap's can, and tinydtls refuses it.
        assert "alert" in await coap_client_openssl(port, "x" * 29 + "@app", KEY, "hi", wait_s=2)
        assert (await publish(port, "dev@app", KEY)).code == Code.CHANGED
        assert sum(dtls_sessions(context)) <= 2  # failed handshakes leave at most a half-open peer


async def test_junk_from_unknown_addresses_opens_no_state(directory: MemoryDirectory) -> None:
    async with echo_server(directory) as (context, port, _keys):
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port))
        try:
            for datagram in (os.urandom(100), key_exchange(b"dev@app"), CCS, FINISHED, b"", b"\x16"):
                transport.sendto(datagram)
            assert (await publish(port, "dev@app", KEY)).code == Code.CHANGED
            assert dtls_sessions(context) == (0, 0)  # the client said close_notify when done
        finally:
            transport.close()


class RawPeer(asyncio.DatagramProtocol):
    """A bare UDP socket, to play the first steps of a handshake from a source port of its own."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


@contextlib.asynccontextmanager
async def half_open_handshake(port: int) -> AsyncIterator[asyncio.DatagramTransport]:
    """ClientHello, HelloVerifyRequest, ClientHello with the cookie, ServerHello: a half-open
    handshake with state on the server, as a flood from many source ports makes them."""
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawPeer, remote_addr=("127.0.0.1", port))
    try:
        random = os.urandom(32)
        async with asyncio.timeout(TIMEOUT):
            transport.sendto(client_hello(random=random))
            verify = await peer.received.get()
            assert verify[13] == 3, "HelloVerifyRequest"
            cookie = verify[13 + 12 + 3 : 13 + 12 + 3 + verify[13 + 12 + 2]]
            transport.sendto(client_hello(cookie, random))
            assert (await peer.received.get())[13] == 2, "ServerHello"
        yield transport
    finally:
        transport.close()


async def test_a_flood_of_handshakes_is_bounded_and_open_sessions_survive_it(directory: MemoryDirectory) -> None:
    async with echo_server(directory, max_sessions=4) as (context, port, _keys), dtls_client(
        port, "dev@app", KEY
    ) as steady:
        first = await steady.post()
        assert dtls_sessions(context) == (0, 1)
        for _ in range(12):
            async with half_open_handshake(port):
                pass
            handshaking, connected = dtls_sessions(context)
            assert handshaking <= 3
            assert connected == 1
        assert dtls_sessions(context) == (3, 1)
        again = await steady.post()
        assert again.remote is first.remote, "the same session, no new handshake"
        assert (await publish(port, "dev@app", KEY)).code == Code.CHANGED
        assert sum(dtls_sessions(context)) <= 4


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("hawser_coap_dtls_dropped_total", {"reason": reason}) or 0.0


async def test_what_waits_for_a_key_is_bounded(directory: MemoryDirectory) -> None:
    gate, original = asyncio.Event(), directory.get_device_info

    async def slow(application: str, device: str) -> DeviceInfo | None:
        await gate.wait()
        return await original(application, device)

    directory.get_device_info = slow  # type: ignore[method-assign]
    async with echo_server(directory) as (context, port, _keys), half_open_handshake(port) as transport:
        transport.sendto(key_exchange(b"dev@app"))
        held = pool_of(context)._held
        address = ("127.0.0.1", transport.get_extra_info("sockname")[1])
        await eventually(lambda: address in held)
        before = dropped("held-full")
        for _ in range(20):
            transport.sendto(bytes(1000))
        await eventually(lambda: dropped("held-full") == before + 16)
        assert len(held[address]) == 5  # the ClientKeyExchange and 4 of 1000 bytes
        assert sum(map(len, held[address])) <= 4096
        gate.set()
        await eventually(lambda: not held)


async def test_lookups_beyond_the_bound_drop_the_flight_and_the_client_retries(directory: MemoryDirectory) -> None:
    """libcoap (OpenSSL) for the second client: it retransmits its flight reliably (aiocoap's
    DTLS client does not, once the process is a few seconds old: its timers read tinydtls's
    clock, which restarts with every DTLS context)."""
    directory.add_device("app", "dev2", PskCredential(KEY))
    gate, original = asyncio.Event(), directory.get_device_info

    async def slow(application: str, device: str) -> DeviceInfo | None:
        await gate.wait()
        return await original(application, device)

    directory.get_device_info = slow  # type: ignore[method-assign]
    keys = PskKeys(directory, cache_size=100, cache_ttl_s=60.0, max_pending=1)
    context, port = await start_dtls_context(echo_site(), "127.0.0.1", 0, keys, max_sessions=8)
    try:
        before = dropped("lookups-full")
        first = asyncio.ensure_future(publish(port, "dev@app", KEY))
        await eventually(lambda: len(pool_of(context)._held) == 1)
        second = asyncio.ensure_future(coap_client_openssl(port, "dev2@app", KEY, "hi"))
        await eventually(lambda: dropped("lookups-full") > before)
        gate.set()  # the second client retransmits its flight, which then finds room
        assert (await first).code == Code.CHANGED
        assert repr([PskIdentity("app", "dev2")]) in await second
        assert keys.lookups == 2
    finally:
        await context.shutdown()
        await keys.aclose()


async def test_a_registry_change_closes_the_sessions_it_concerns(directory: MemoryDirectory) -> None:
    directory.add_device("app", "other", PskCredential(KEY))
    async with echo_server(directory) as (context, port, _keys), dtls_client(
        port, "dev@app", KEY
    ) as dev, dtls_client(port, "other@app", KEY) as other:
        held = [await dev.post(), await other.post()]
        assert dtls_sessions(context) == (0, 2)
        directory.update_device("app", "dev", credentials=(PskCredential(b"rotated-key"),))
        assert dtls_sessions(context) == (0, 1)
        await refused(port, "dev@app", KEY)
        assert (await publish(port, "dev@app", b"rotated-key")).code == Code.CHANGED
        assert (await other.post()).remote is held[1].remote


# --- the device endpoint over DTLS, with a real bus -------------------------------------------------------


@dataclass
class World:
    a: str
    port: int
    context: Any
    store: RegistryStore
    reader: EventReader


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=1024, parallelism=1))
    a = unique_name("a")
    psk = {"psk": {"key": base64.b64encode(KEY).decode()}}
    async with EmbeddedBus(tmp_path / "events.db", partitions=1) as bus, await RegistryStore.open(
        f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}", bus=bus
    ) as store:
        await store.create_application(ApplicationDocument.model_validate({"metadata": {"name": a}}))
        for doc in (
            device_doc(a, "d", psk),
            device_doc(a, "gw", psk),
            device_doc(a, "th1", gatewaySelector={"matchNames": ["gw"]}),
            device_doc(a, "dis", psk, core={"disabled": True}),
            device_doc(a, "pw", {"pass": "pw"}),
        ):
            await store.create_device(a, doc)
        authenticator = DeviceAuthenticator(store, cache_size=100, cache_ttl_s=60.0)
        settings = CoapEndpointSettings(host="127.0.0.1", port=0, dtls_port=0)
        endpoint = CoapEndpoint(Ingest(bus, instance="coap-dtls-test", max_payload_bytes=4096), authenticator,
                                DeviceSessions(), settings)
        keys = PskKeys(store, cache_size=100, cache_ttl_s=60.0)
        subscription = await bus.subscribe([events_topic(a)])
        context, port = await start_dtls_context(endpoint.site, "127.0.0.1", 0, keys, max_sessions=8)
        try:
            yield World(a, port, context, store, EventReader(subscription))
        finally:
            await endpoint.drain(5.0)
            await context.shutdown()
            await keys.aclose()
            await subscription.aclose()
            await authenticator.aclose()
    passwords.configure(passwords.KdfCost())


async def nothing_published(world: World) -> None:
    """The next event is a fresh marker: whatever failed before it reached no bus."""
    marker = unique_name("marker").encode()
    assert (await publish(world.port, f"d@{world.a}", KEY, marker)).code == Code.CHANGED
    assert (await world.reader.one()).data == marker


async def coap_client_openssl(port: int, identity: str, key: bytes, payload: str, *, wait_s: int = 5) -> str:
    """libcoap's client: POST `payload` to /v1/telemetry over DTLS-PSK; its output."""
    program = shutil.which("coap-client-openssl")
    if program is None:
        pytest.fail("coap-client-openssl is missing: scripts/provision.sh installs libcoap3-bin")
    process = await asyncio.create_subprocess_exec(
        program, "-m", "post", "-u", identity, "-k", key.decode(), "-e", payload, "-B", str(wait_s),
        f"coaps://127.0.0.1:{port}/v1/telemetry",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(wait_s + TIMEOUT):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return output.decode(errors="replace")


async def test_aiocoap_publishes_as_the_device_its_key_proves(world: World) -> None:
    response = await publish(world.port, f"d@{world.a}", KEY, b'{"t": 1}', path=("v1", "temp"),
                             query=["data_schema=urn:t"])
    assert response.code == Code.CHANGED
    event = await world.reader.one()
    attributes = event.attributes
    assert (attributes["application"], attributes["device"], attributes["sender"]) == (world.a, "d", "d")
    assert (attributes["subject"], attributes["dataschema"], event.data) == ("temp", "urn:t", b'{"t": 1}')


async def test_a_gateway_publishes_for_its_device_over_dtls(world: World) -> None:
    response = await publish(world.port, f"gw@{world.a}", KEY, b"for th1", query=["as=th1"])
    assert response.code == Code.CHANGED
    event = await world.reader.one()
    assert (event.attributes["device"], event.attributes["sender"], event.data) == ("th1", "gw", b"for th1")
    assert (await publish(world.port, f"d@{world.a}", KEY, query=["as=th1"])).code == Code.FORBIDDEN


async def test_libcoap_publishes_over_dtls(world: World) -> None:
    marker = unique_name("libcoap")
    output = await coap_client_openssl(world.port, f"d@{world.a}", KEY, marker)
    event = await world.reader.one()
    assert (event.attributes["device"], event.data) == ("d", marker.encode()), output


async def test_libcoap_with_a_wrong_key_or_identity_publishes_nothing(world: World) -> None:
    for identity, key in ((f"d@{world.a}", b"wrong-key-01234"), (f"nobody@{world.a}", KEY), (f"pw@{world.a}", KEY)):
        output = await coap_client_openssl(world.port, identity, key, "never", wait_s=2)
        assert "cannot send CoAP pdu" in output, output
    await nothing_published(world)


async def test_aiocoap_with_a_wrong_key_or_identity_publishes_nothing(world: World) -> None:
    await refused(world.port, f"d@{world.a}", b"wrong-key-01234")
    await refused(world.port, f"nobody@{world.a}", KEY)
    await refused(world.port, f"pw@{world.a}", KEY)  # a device without a psk credential
    await nothing_published(world)


async def test_a_disabled_device_completes_the_handshake_and_gets_403(world: World) -> None:
    response = await publish(world.port, f"dis@{world.a}", KEY)
    assert response.code == Code.FORBIDDEN
    await nothing_published(world)


async def test_a_new_key_in_the_registry_replaces_the_old_one(world: World) -> None:
    async with dtls_client(world.port, f"d@{world.a}", KEY) as old:
        assert (await old.post(b"before")).code == Code.CHANGED
        assert (await world.reader.one()).data == b"before"
        rotated = b"rotated-key-012"
        new_key = {"psk": {"key": base64.b64encode(rotated).decode()}}
        await world.store.update_device(world.a, device_doc(world.a, "d", new_key))
        assert dtls_sessions(world.context)[1] == 0, "the open session was closed at once"
        await refused(world.port, f"d@{world.a}", KEY)
        assert (await publish(world.port, f"d@{world.a}", rotated, b"after")).code == Code.CHANGED
        assert (await world.reader.one()).data == b"after"


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        # Location-Path: a string option aiocoap's client sends as given (it reads Uri-Path itself).
        pytest.param(OpaqueOption(8, b"\xff\xfe"), "not-utf8", id="string-option-not-utf8"),
        pytest.param(OpaqueOption(12, b"\x01\x02\x03\x04"), "content-format", id="content-format-of-4-bytes"),
    ],
)
async def test_what_a_session_carries_is_screened_as_udp_datagrams_are(
    world: World, option: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiocoap decodes a session's plaintext as it decodes UDP: unscreened, a Uri-Path that is not
    UTF-8 raised (a traceback per retransmission) and every Content-Format number stayed in an enum."""
    counted = ("hawser_coap_datagrams_dropped_total", {"reason": reason})
    before = REGISTRY.get_sample_value(*counted) or 0.0
    async with dtls_client(world.port, f"d@{world.a}", KEY) as client:
        message = Message(code=Code.POST, payload=b"screened", uri=f"coaps://127.0.0.1:{world.port}")
        message.opt.uri_path = ("v1", "t")
        message.opt.add_option(option)
        with caplog.at_level(logging.ERROR):
            request = client.context.request(message)
            await eventually(lambda: (REGISTRY.get_sample_value(*counted) or 0.0) > before)
        client.remotes.append(message.remote)
    with pytest.raises(aiocoap.error.LibraryShutdown):  # dropped unanswered, as on UDP
        await request.response
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []
    await nothing_published(world)


async def test_start_coap_server_serves_dtls_beside_udp(world: World, tmp_path: Path) -> None:
    """The composition the service uses: `start_coap_server` with keys binds both."""
    async with EmbeddedBus(tmp_path / "other.db", partitions=1) as bus:
        await bus.ensure_topic(events_topic(world.a))
        settings = CoapEndpointSettings(host="127.0.0.1", port=0, dtls_port=0)
        authenticator = DeviceAuthenticator(world.store, cache_size=10, cache_ttl_s=60.0)
        endpoint = CoapEndpoint(Ingest(bus, instance="t", max_payload_bytes=4096), authenticator, DeviceSessions(),
                                settings)
        keys = PskKeys(world.store, cache_size=10, cache_ttl_s=60.0)
        subscription = await bus.subscribe([events_topic(world.a)])
        try:
            async with await start_coap_server(endpoint, settings, keys) as server:
                assert server.dtls_port not in (None, 0, server.port)
                assert server.dtls_port is not None
                assert (await publish(server.dtls_port, f"d@{world.a}", KEY, b"both")).code == Code.CHANGED
                assert (await EventReader(subscription).one()).data == b"both"
        finally:
            await subscription.aclose()
            await keys.aclose()
            await authenticator.aclose()
