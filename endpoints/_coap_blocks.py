"""Bounded reassembly of Block1 uploads (RFC 7959) for the CoAP endpoint.

aiocoap's own `Block1Spool` keeps any number of transfers of any size for 93 s; this one holds at
most `max_transfers` (the least recently fed is dropped beyond that), each at most `max_bytes`
(refused as soon as a block would take it past the limit, before that block is kept), and forgets a
transfer idle for `lifetime_s`. Nothing here does I/O or awaits; expiry is checked as blocks
arrive, so no timer runs per transfer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import Counter

from hawser.errors import BadRequest, PayloadTooLarge

#: How long a transfer may wait for its next block: RFC 7252's MAX_TRANSMIT_WAIT, as aiocoap's.
BLOCK_LIFETIME_S = 93.0

DROPPED = Counter("hawser_coap_block_transfers_dropped", "Block1 transfers given up, by reason.", ["reason"])
_EVICTED = DROPPED.labels("evicted")
_EXPIRED = DROPPED.labels("expired")


class IncompleteBody(BadRequest):
    """A block arrived whose predecessors this server does not hold (RFC 7959: 4.08)."""

    code = "incomplete-body"


class BlockSpool:
    """Transfers being reassembled, by a key the caller derives from the remote and the request."""

    def __init__(
        self,
        max_bytes: int,
        max_transfers: int,
        *,
        lifetime_s: float = BLOCK_LIFETIME_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_transfers = max_transfers
        self.lifetime_s = lifetime_s
        self._clock = clock
        # key → (deadline, body so far); ordered by last block received, oldest first.
        self._transfers: OrderedDict[Hashable, tuple[float, bytearray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._transfers)

    def feed(self, key: Hashable, block: Any, payload: bytes, size1: int | None = None) -> bytes | None:
        """Take one block (aiocoap's BlockwiseTuple: block_number, more, size_exponent). Returns
        the whole body with the last block, None while more are due (the caller answers 2.31
        Continue). Raises PayloadTooLarge (with Size1 announced over the limit, or as soon as a
        block would go past it), IncompleteBody (no transfer to continue, or a gap), BadRequest (a
        malformed block). A failed transfer is forgotten."""
        number, more, exponent = block
        if exponent == 7:
            raise BadRequest("block size exponent 7 (BERT) is reserved over UDP")
        size = 1 << (exponent + 4)
        if len(payload) > size or (more and len(payload) != size):
            self._transfers.pop(key, None)
            raise BadRequest("a block must fill its size, and only the last may be shorter")
        now = self._clock()
        self._expire(now)
        if number == 0:
            self._transfers.pop(key, None)
            if size1 is not None and size1 > self.max_bytes:
                raise PayloadTooLarge(size1, self.max_bytes)
            if len(payload) > self.max_bytes:
                raise PayloadTooLarge(len(payload), self.max_bytes)
            if not more:
                return payload
            self._transfers[key] = (now + self.lifetime_s, bytearray(payload))
            while len(self._transfers) > self.max_transfers:
                self._transfers.popitem(last=False)
                _EVICTED.inc()
            return None
        held = self._transfers.pop(key, None)
        if held is None:
            raise IncompleteBody("no block-wise transfer to continue")
        body = held[1]
        offset = number * size
        if offset > len(body):
            raise IncompleteBody("a block is missing")
        if offset + len(payload) > self.max_bytes:
            raise PayloadTooLarge(offset + len(payload), self.max_bytes)
        # A block at an offset already held (a client repeating one with a new message id)
        # replaces what followed it: the body is always exactly the blocks up to this one.
        del body[offset:]
        body += payload
        if not more:
            return bytes(body)
        self._transfers[key] = (now + self.lifetime_s, body)
        return None

    def _expire(self, now: float) -> None:
        transfers = self._transfers
        while transfers:
            key, (deadline, _) = next(iter(transfers.items()))
            if deadline > now:
                return
            del transfers[key]
            _EXPIRED.inc()

    def clear(self) -> None:
        self._transfers.clear()


__all__ = ["BLOCK_LIFETIME_S", "BlockSpool", "IncompleteBody"]
