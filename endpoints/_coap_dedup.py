"""Message deduplication for the CoAP UDP server (RFC 7252 section 4.5), in place of aiocoap's.

aiocoap 0.4 keeps, per request, the response `Message` (which holds the request, option 4209 and
all) and a timer for EXCHANGE_LIFETIME (247 s): about 25 objects the garbage collector tracks and
3.2 KiB per request, with no bound on their number. Under load that is gigabytes of memory and
full collections of a second. Here an entry is (sender host, port, message id) → the bytes of the
ACK sent for it (None while the request is handled): a few untracked objects, expired in arrival
order with no timer, and capped in number, so a flood from spoofed addresses costs bounded memory.
The semantics are aiocoap's: a repeated CON already answered gets the same ACK again (an empty ACK
when the answer is a separate response, which aiocoap retransmits itself), a repeated CON still being
handled and a repeated NON are dropped. Nothing here decodes a message; it sees datagrams only after
`_coap_datagram.screen` accepted them.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any

from prometheus_client import Counter

from endpoints._coap_datagram import message_interface

DUPLICATES = Counter("hawser_coap_duplicates", "Retransmitted CoAP requests answered from the deduplication table.",
                     ["outcome"])
_RESENT = DUPLICATES.labels("resent")
_DROPPED = DUPLICATES.labels("dropped")

#: RFC 7252's EXCHANGE_LIFETIME with the default transmission parameters, as aiocoap uses it.
EXCHANGE_LIFETIME_S = 247.0

_Key = tuple[str, int, bytes]


class Deduplicator:
    """The table: `seen` decides about an incoming request, `sent` records the ACK that answered it."""

    __slots__ = ("_clock", "_expiry", "_lifetime", "_max_entries", "_replies")

    def __init__(self, *, max_entries: int, lifetime_s: float = EXCHANGE_LIFETIME_S, clock: Any = None) -> None:
        self._max_entries = max_entries
        self._lifetime = lifetime_s
        self._clock = clock or asyncio.get_running_loop().time
        self._replies: dict[_Key, bytes | None] = {}
        self._expiry: collections.deque[tuple[float, _Key]] = collections.deque()

    def __len__(self) -> int:
        return len(self._replies)

    def seen(self, key: _Key) -> tuple[bool, bytes | None]:
        """(duplicate, reply to send again). A new key is remembered as being handled."""
        replies = self._replies
        if key in replies:
            return True, replies[key]
        now = self._clock()
        replies[key] = None
        expiry = self._expiry
        expiry.append((now + self._lifetime, key))
        # Oldest first: expired entries, and beyond the cap the oldest live ones (their senders'
        # retransmissions, 45 s at most, are long over unless the flood is enormous).
        while expiry[0][0] <= now or len(expiry) > self._max_entries:
            _, old = expiry.popleft()
            replies.pop(old, None)
        return False, None

    def sent(self, key: _Key, reply: bytes) -> None:
        """Remember the first ACK sent for a request being handled."""
        if key in self._replies and self._replies[key] is None:
            self._replies[key] = reply


def install_deduplication(context: Any, *, max_entries: int) -> Deduplicator:
    """Replace the deduplication of a `udp6` server context with a `Deduplicator`. Install it before
    `install_screen`, so that the screen runs first and malformed datagrams never enter the table."""
    interface = message_interface(context)
    manager = context.request_interfaces[0].token_interface
    if not callable(getattr(manager, "_deduplicate_message", None)) or not callable(
        getattr(interface.transport, "sendmsg", None)
    ):
        raise RuntimeError("aiocoap's message manager changed: CoAP deduplication cannot be installed")
    table = Deduplicator(max_entries=max_entries)
    # aiocoap then neither checks nor stores anything (it stores responses only for keys it checked).
    manager._deduplicate_message = lambda message: False
    received = interface.datagram_msg_received
    transport = interface.transport
    send = transport.sendmsg

    def deduplicated(data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        if 0 < data[1] < 32:  # a request (the screen let through only CON and NON ones)
            duplicate, reply = table.seen((address[0], address[1], data[2:4]))
            if duplicate:
                if reply is not None and not data[0] & 0x10:  # a CON answered already: answer again
                    pktinfo = [c for c in ancdata if c[0] == socket.IPPROTO_IPV6 and c[1] == socket.IPV6_PKTINFO]
                    send(reply, pktinfo, 0, address)
                    _RESENT.inc()
                else:
                    _DROPPED.inc()
                return
        received(data, ancdata, flags, address)

    def sendmsg(data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        if data[0] & 0x30 == 0x20:  # an ACK carries the message id of the CON it answers
            table.sent((address[0], address[1], data[2:4]), data)
        send(data, ancdata, flags, address)

    interface.datagram_msg_received = deduplicated
    transport.sendmsg = sendmsg
    return table


__all__ = ["EXCHANGE_LIFETIME_S", "Deduplicator", "install_deduplication"]
