"""CoAP over DTLS with pre-shared keys (identity `device@app`): aiocoap's message layer over our
own socket and pool of tinydtls peers (`endpoints._coap_dtls_peer`), in place of aiocoap's
`tinydtls_server`, which binds port+1, refuses any-address binds, never bounds its per-address
states and can only read keys synchronously.

Rules kept here: exactly the configured port is bound (0: an ephemeral one); at most `max_sessions`
peer states, a new one only for a ClientHello, half-open handshakes evicted before established
sessions (least recently used first); a ClientKeyExchange whose identity is not cached waits for
`PskKeys.prefetch`, and that peer's later datagrams queue behind it (both bounded); what a
session carries is screened as UDP datagrams are (`_coap_datagram.screen`) before aiocoap decodes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, cast

import aiocoap
from aiocoap import error
from aiocoap.numbers import COAPS_PORT
from aiocoap.transports.generic_udp import GenericMessageInterface
from aiocoap.util import hostportjoin
from prometheus_client import Counter

from auth.psk import PskKey, PskKeys
from endpoints._coap_datagram import DROPPED as DATAGRAMS_DROPPED
from endpoints._coap_datagram import screen
from endpoints._coap_dtls_peer import DtlsPeer, psk_identity_of, starts_handshake
from hawser.errors import Overloaded

log = logging.getLogger(__name__)

DROPPED = Counter("hawser_coap_dtls_dropped", "DTLS peer states and datagrams dropped, by reason.", ["reason"])

#: Peers whose key lookup may run at once (their datagrams are held meanwhile).
MAX_HELD_PEERS = 256
#: Datagrams, and bytes, held per peer while its key is looked up (a handshake flight is a few
#: datagrams of about a hundred bytes).
MAX_HELD_DATAGRAMS = 8
MAX_HELD_BYTES = 4096


class _DtlsServer(asyncio.DatagramProtocol):
    """The bound UDP socket and its pool of DTLS peers (the `PeerHost` of every peer)."""

    def __init__(self, interface: _DtlsInterface, keys: PskKeys, dtls: Any, max_sessions: int) -> None:
        self.interface = interface
        self.keys = keys
        self.dtls = dtls
        self.max_sessions = max_sessions
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.hostinfo_local = ""
        # Two LRU pools, oldest first: a flood of ClientHellos only ever evicts half-open peers.
        self.handshaking: OrderedDict[Any, DtlsPeer] = OrderedDict()
        self.connected: OrderedDict[Any, DtlsPeer] = OrderedDict()
        self._held: dict[Any, list[bytes]] = {}
        self._lookups: set[asyncio.Task[None]] = set()
        self._lost = asyncio.get_running_loop().create_future()
        self._unwatch = keys.watch(self._revoke)

    def __len__(self) -> int:
        return len(self.handshaking) + len(self.connected)

    # --- asyncio.DatagramProtocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A DatagramTransport in fact (asyncio's selector transport does not say so).
        self.transport = cast(asyncio.DatagramTransport, transport)
        host, self.port = transport.get_extra_info("sockname")[:2]
        self.hostinfo_local = hostportjoin(host, None if self.port == COAPS_PORT else self.port)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # An unconnected socket cannot tell which peer an ICMP error was about.
        log.debug("DTLS socket error ignored: %s", exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        held = self._held.get(addr)
        if held is not None:  # this peer's key is being read: keep its datagrams in order
            if len(held) < MAX_HELD_DATAGRAMS and sum(map(len, held)) + len(data) <= MAX_HELD_BYTES:
                held.append(data)
            else:
                DROPPED.labels("held-full").inc()
            return
        # Only the datagrams of known peers are parsed: the rest open a peer (a ClientHello) or go.
        identity = psk_identity_of(data) if self._peer(addr) is not None else None
        if identity is not None and not self.keys.known(identity):
            if len(self._held) >= MAX_HELD_PEERS:
                DROPPED.labels("lookups-full").inc()  # the client retransmits its flight
                return
            self._held[addr] = [data]
            task = asyncio.get_running_loop().create_task(self._fetch_then_feed(addr, identity))
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)
            return
        self._feed(addr, data)

    # --- peers -------------------------------------------------------------------------------------------

    def _peer(self, addr: Any) -> DtlsPeer | None:
        peer = self.connected.get(addr)
        return peer if peer is not None else self.handshaking.get(addr)

    async def _fetch_then_feed(self, addr: Any, identity: bytes) -> None:
        found: PskKey | None = None
        try:
            found = await self.keys.prefetch(identity)
        except Overloaded:
            DROPPED.labels("lookups-full").inc()
            del self._held[addr]
            return
        except Exception:  # the registry failed: this handshake fails, the client may retry
            log.exception("reading a pre-shared key failed")
        held = self._held.pop(addr, [])
        peer = self._peer(addr)
        if peer is None:
            return  # evicted meanwhile: its handshake is gone
        peer.keys.pin(identity, found)
        for data in held:
            self._feed(addr, data)

    def _feed(self, addr: Any, data: bytes) -> None:
        peer = self.connected.get(addr)
        if peer is not None:
            self.connected.move_to_end(addr)
        elif (peer := self.handshaking.get(addr)) is not None:
            self.handshaking.move_to_end(addr)
        elif starts_handshake(data):
            while len(self) >= self.max_sessions:
                pool = self.handshaking or self.connected
                DROPPED.labels("evicted-handshake" if pool is self.handshaking else "evicted-session").inc()
                _, victim = pool.popitem(last=False)
                victim.close(error.LibraryShutdown("DTLS session evicted: too many sessions"))
            peer = self.handshaking[addr] = DtlsPeer(self, addr)
        else:
            return  # only a ClientHello may open a peer state
        peer.handle(data)

    def send(self, addr: Any, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def received_plaintext(self, peer: DtlsPeer, data: bytes) -> None:
        self.interface.received_plaintext(peer, data)

    def peer_connected(self, peer: DtlsPeer) -> None:
        if self.handshaking.get(peer.addr) is peer:
            del self.handshaking[peer.addr]
            self.connected[peer.addr] = peer

    def peer_closed(self, peer: DtlsPeer, exc: Exception) -> None:
        for pool in (self.handshaking, self.connected):
            if pool.get(peer.addr) is peer:
                del pool[peer.addr]
        self.interface.peer_failed(peer, exc)

    def _revoke(self, application: str, device: str | None) -> None:
        """After a registry change, close the sessions it concerns, so that a new key or a
        deleted device takes effect at once (the client gets a close_notify and handshakes again;
        whether it is disabled is checked per request anyway)."""
        for peer in [*self.handshaking.values(), *self.connected.values()]:
            claims = peer.keys.claims
            if claims is not None and claims.application == application and device in (None, claims.device):
                peer.close(error.LibraryShutdown("the device's registry entry changed"))

    async def aclose(self) -> None:
        self._unwatch()
        for task in self._lookups:
            task.cancel()
        await asyncio.gather(*self._lookups, return_exceptions=True)
        self._held.clear()
        for peer in [*self.handshaking.values(), *self.connected.values()]:
            peer.close(error.LibraryShutdown("the CoAP DTLS server is shutting down"))
        if self.transport is not None:
            self.transport.close()
            await asyncio.shield(self._lost)


class _DtlsInterface(GenericMessageInterface):  # type: ignore[misc]
    """aiocoap's message interface over the pool: CoAP messages in from the peers, replies out
    through them. Server only: it never opens a DTLS session itself."""

    _pool: _DtlsServer
    _mman: Any  # aiocoap's MessageManager; None once shut down

    @classmethod
    async def create(
        cls, mman: Any, log: logging.Logger, bind: tuple[str, int], keys: PskKeys, dtls: Any, max_sessions: int
    ) -> _DtlsInterface:
        loop = asyncio.get_running_loop()
        self = cls(mman, log, loop)
        self._shutting_down = False
        # An unconnected socket, on an any-address (0.0.0.0, ::) too: replies leave from whatever
        # source address the kernel routes them from, which on a multi-homed host may not be the
        # one the client wrote to (it then ignores them); bind a specific address there. Without
        # SO_REUSEPORT: a second server on the same port must fail, not share it.
        _, self._pool = await loop.create_datagram_endpoint(
            lambda: _DtlsServer(self, keys, dtls, max_sessions), local_addr=bind
        )
        return self

    def received_plaintext(self, peer: DtlsPeer, data: bytes) -> None:
        if self._mman is None or self._shutting_down:
            return
        # Screened as UDP datagrams are: aiocoap's decoding would raise on a Uri-Path that is not
        # UTF-8 and keep an enum member per Content-Format number, whoever holds the session.
        reason = screen(data)
        if reason is not None:
            DATAGRAMS_DROPPED.labels(reason).inc()
            return
        self._received_datagram(peer, data)

    def peer_failed(self, peer: DtlsPeer, exc: Exception) -> None:
        # Once shutting down, the message manager has dropped its exchanges already.
        if self._mman is not None and not self._shutting_down:
            self._mman.dispatch_error(exc, peer)

    async def determine_remote(self, request: Any) -> None:
        return None

    async def recognize_remote(self, remote: Any) -> bool:
        return isinstance(remote, DtlsPeer) and remote.server is self._pool

    async def shutdown(self) -> None:
        self._shutting_down = True
        await self._pool.aclose()
        self._mman = None


async def start_dtls_context(
    site: Any, host: str, port: int, keys: PskKeys, *, max_sessions: int
) -> tuple[aiocoap.Context, int]:
    """An aiocoap server context serving `site` over DTLS-PSK on exactly (host, port), and the
    port it bound (the real one for 0). Requests reach `site` with
    `request.remote.authenticated_claims == [PskIdentity(application, device)]`. Stop it with
    `await context.shutdown()`; `keys` is not closed with it."""
    if max_sessions < 1:
        raise ValueError("max_sessions must be at least 1")
    # Imported here so that a missing DTLSSocket fails the start, and only the DTLS part of it.
    from DTLSSocket import dtls

    context = aiocoap.Context(loop=asyncio.get_running_loop(), serversite=site, loggername="coap-dtls-server")
    made: list[_DtlsInterface] = []

    async def create(mman: Any) -> _DtlsInterface:
        made.append(await _DtlsInterface.create(mman, context.log, (host, port), keys, dtls, max_sessions))
        return made[0]

    await context._append_tokenmanaged_messagemanaged_transport(create)
    return context, made[0]._pool.port


def dtls_sessions(context: aiocoap.Context) -> tuple[int, int]:
    """(half-open handshakes, open sessions) a context from `start_dtls_context` holds."""
    pool: _DtlsServer = context.request_interfaces[0].token_interface.message_interface._pool
    return len(pool.handshaking), len(pool.connected)


__all__ = ["DROPPED", "dtls_sessions", "start_dtls_context"]
