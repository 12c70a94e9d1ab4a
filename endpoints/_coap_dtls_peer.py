"""One peer of the CoAP DTLS server (`endpoints._coap_dtls`): a pure peek into DTLS records,
the key store tinydtls reads during a peer's handshake, and the peer itself (its tinydtls context
and the aiocoap remote its requests carry).

Rules kept here: nothing called back from tinydtls raises (an exception there would surface in an
unrelated call); tinydtls never gets a key longer than it can hold; a session, once up, never
changes whose it is; nothing is written to a peer without an open session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from aiocoap import interfaces
from aiocoap.numbers import COAPS_PORT, MAX_REGULAR_BLOCK_SIZE_EXP
from aiocoap.transports.tinydtls import (
    CODE_CLOSE_NOTIFY,
    DTLS_EVENT_CONNECTED,
    LEVEL_FATAL,
    CloseNotifyReceived,
    FatalDTLSError,
)
from aiocoap.util import hostportjoin

from auth.psk import MAX_KEY_BYTES, PskIdentity, PskKey, PskKeys

log = logging.getLogger(__name__)

_HANDSHAKE, _CLIENT_HELLO, _CLIENT_KEY_EXCHANGE = 22, 1, 16
_RECORD_HEADER, _HANDSHAKE_HEADER = 13, 12
_MAX_RECORDS = 16


def handshake_messages(datagram: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(type, body, complete) of the epoch-0 handshake messages in a datagram, records and
    messages taken one after another; stops at the first truncated one (tinydtls refuses it), and
    after `_MAX_RECORDS` records (a handshake flight has a few; a datagram of tiny records is junk)."""
    offset = records = 0
    while offset + _RECORD_HEADER <= len(datagram) and records < _MAX_RECORDS:
        records += 1
        content_type = datagram[offset]
        epoch = int.from_bytes(datagram[offset + 3 : offset + 5])
        length = int.from_bytes(datagram[offset + 11 : offset + 13])
        fragment = datagram[offset + _RECORD_HEADER : offset + _RECORD_HEADER + length]
        if len(fragment) < length:
            return
        offset += _RECORD_HEADER + length
        if content_type != _HANDSHAKE or epoch != 0:
            continue
        position = 0
        while position + _HANDSHAKE_HEADER <= len(fragment):
            kind = fragment[position]
            total = int.from_bytes(fragment[position + 1 : position + 4])
            start = int.from_bytes(fragment[position + 6 : position + 9])
            size = int.from_bytes(fragment[position + 9 : position + 12])
            body = fragment[position + _HANDSHAKE_HEADER : position + _HANDSHAKE_HEADER + size]
            if len(body) < size:
                return
            position += _HANDSHAKE_HEADER + size
            yield kind, body, start == 0 and size == total


def psk_identity_of(datagram: bytes) -> bytes | None:
    """The psk_identity of a PSK ClientKeyExchange in the datagram (2-byte length, then the
    identity, filling the message exactly), else None."""
    for kind, body, complete in handshake_messages(datagram):
        if kind == _CLIENT_KEY_EXCHANGE and complete and len(body) >= 2 and int.from_bytes(body[:2]) == len(body) - 2:
            return body[2:]
    return None


def starts_handshake(datagram: bytes) -> bool:
    """Whether the datagram opens with a ClientHello, the only thing a new peer may send."""
    if len(datagram) < _RECORD_HEADER or datagram[0] != _HANDSHAKE or datagram[3:5] != b"\0\0":
        return False
    first = next(handshake_messages(datagram), None)
    return first is not None and first[0] == _CLIENT_HELLO


# tinydtls gets one peer per context, always at this address; the real one is ours to keep.
_SENTINEL = ("::1", 1234)
# Servers never send an identity, but DTLSSocket wants one; a constant, because it keeps a bare
# char* into this object, which must outlive every context.
_OWN_IDENTITY = b"hawser"
_LEVEL_NOALERT, _LEVEL_WARNING = 0, 1
#: How often a peer's handshake retransmissions are checked (tinydtls's clock restarts with every
#: new context, so its own deadlines cannot be trusted; the client retransmits too).
_RETRANSMIT_POLL_S = 1.0


class _PeerKeys:
    """The dict-like key store DTLSSocket reads for one peer: the key prefetched for this
    handshake, else the cache. Remembers whose key was handed out (the claims), and once the
    session is up it never hands out another identity's key (a renegotiation cannot switch)."""

    def __init__(self, keys: PskKeys) -> None:
        self._keys = keys
        self._pinned: tuple[bytes, PskKey | None] | None = None
        self.claims: PskIdentity | None = None
        self.locked = False

    def pin(self, identity: bytes, found: PskKey | None) -> None:
        self._pinned = (identity, found)

    def _find(self, identity: bytes) -> PskKey | None:
        if self._pinned is not None and self._pinned[0] == identity:
            found = self._pinned[1]
        else:
            try:
                found = PskKey(*self._keys.find_dtls_psk(identity))
            except KeyError:
                return None
        if found is None or not 0 < len(found.key) <= MAX_KEY_BYTES:
            return None
        if self.locked and found.identity != self.claims:
            return None
        return found

    # What DTLSSocket calls: `identity in store.keys()`, then `store[identity]`.
    def keys(self) -> _PeerKeys:
        return self

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, bytes) and self._find(identity) is not None

    def __getitem__(self, identity: bytes) -> bytes:
        found = self._find(identity)
        if found is None:  # never: DTLSSocket asks `in` first, in the same call
            raise KeyError("no pre-shared key for this identity")
        self.claims = found.identity
        self._pinned = None  # for this handshake only: a later one reads the cache again
        return found.key


class DtlsPeer(interfaces.EndpointAddress):  # type: ignore[misc]
    """One remote address: its tinydtls context, and the aiocoap remote its requests carry.
    Callbacks from tinydtls never raise (an exception there would leak out of an unrelated call)."""

    is_multicast = False
    is_multicast_locally = False
    scheme = "coaps"
    #: Settable per remote, as aiocoap's own addresses.
    maximum_block_size_exp = MAX_REGULAR_BLOCK_SIZE_EXP

    def __init__(self, server: PeerHost, addr: Any) -> None:
        self.server = server
        self.addr = addr
        self.keys = _PeerKeys(server.keys)
        self.connected = False
        host, port = addr[:2]
        self._hostinfo = hostportjoin(host, None if port == COAPS_PORT else port)
        self._dtls = server.dtls.DTLS(read=self._read, write=self._write, event=self._event,
                                      pskId=_OWN_IDENTITY, pskStore=self.keys)
        self._session = server.dtls.Session(*_SENTINEL)
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._failure: Exception | None = None
        self._closed = False

    hostinfo = property(lambda self: self._hostinfo)
    uri_base = property(lambda self: "coaps://" + self._hostinfo)
    hostinfo_local = property(lambda self: self.server.hostinfo_local)
    uri_base_local = property(lambda self: "coaps://" + self.server.hostinfo_local)

    @property
    def authenticated_claims(self) -> list[PskIdentity]:
        claims = self.keys.claims
        return [claims] if self.connected and claims is not None else []

    @property
    def blockwise_key(self) -> tuple[Any, PskIdentity | None]:
        return (self.addr, self.keys.claims)

    def __repr__(self) -> str:
        return f"<DtlsPeer {self.hostinfo} {self.keys.claims}>"

    def send(self, message: bytes) -> None:
        """A CoAP message out (aiocoap's call); only on an open session, since writing to a peer
        tinydtls does not know would start a client handshake."""
        if self.connected and not self._closed:
            self._dtls.write(self._session, message)

    def handle(self, data: bytes) -> None:
        self._busy = True
        try:
            if self._dtls.handleMessage(self._session, data) < 0 and not self.connected:
                # A failed handshake (unknown identity, bad message): tinydtls alerted the client.
                self._failure = self._failure or FatalDTLSError("handshake failed")
        except Exception as exc:  # a bug: drop this peer, keep serving the others
            log.exception("tinydtls failed on a datagram")
            self._failure = self._failure or FatalDTLSError(str(exc))
        finally:
            self._busy = False
        if self._failure is not None:
            self.close(self._failure)
        elif self._timer is None and self._dtls.checkRetransmit():
            self._timer = asyncio.get_running_loop().call_later(_RETRANSMIT_POLL_S, self._retransmit)

    def _retransmit(self) -> None:
        self._timer = None
        if not self._closed and self._dtls.checkRetransmit():  # sends what is due
            self._timer = asyncio.get_running_loop().call_later(_RETRANSMIT_POLL_S, self._retransmit)

    def close(self, exc: Exception) -> None:
        """Forget this peer (a close_notify goes out if its session is open). Deferred to the end
        of `handle` when called from inside tinydtls."""
        if self._closed:
            return
        if self._busy:
            self._failure = self._failure or exc
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        try:
            self._dtls.resetPeer(self._session)
        except Exception:
            log.exception("tinydtls failed to reset a peer")
        self.server.peer_closed(self, exc)

    # tinydtls callbacks

    def _read(self, sender: Any, data: bytes) -> int:
        try:
            self.server.received_plaintext(self, data)
        except Exception:
            log.exception("a CoAP message over DTLS could not be dispatched")
        return len(data)

    def _write(self, recipient: Any, data: bytes) -> int:
        try:
            self.server.send(self.addr, data)
        except Exception:
            log.exception("a DTLS record could not be sent")
        return len(data)

    def _event(self, level: int, code: int) -> None:
        if (level, code) == (_LEVEL_NOALERT, DTLS_EVENT_CONNECTED) and not self._closed:
            self.connected = self.keys.locked = True
            self.server.peer_connected(self)
        elif code == CODE_CLOSE_NOTIFY and level in (_LEVEL_WARNING, LEVEL_FATAL):
            self._failure = self._failure or CloseNotifyReceived()
        elif level == LEVEL_FATAL:
            self._failure = self._failure or FatalDTLSError(code)


class PeerHost(Protocol):
    """What a peer needs from the server socket that holds it."""

    keys: PskKeys
    dtls: Any  # the DTLSSocket.dtls module
    hostinfo_local: str

    def send(self, addr: Any, data: bytes) -> None: ...

    def received_plaintext(self, peer: DtlsPeer, data: bytes) -> None: ...

    def peer_connected(self, peer: DtlsPeer) -> None: ...

    def peer_closed(self, peer: DtlsPeer, exc: Exception) -> None: ...


__all__ = ["DtlsPeer", "PeerHost", "handshake_messages", "psk_identity_of", "starts_handshake"]
