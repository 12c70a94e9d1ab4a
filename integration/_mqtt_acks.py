"""Which deliveries of one subscription are done (written at QoS 0, PUBACKed at QoS 1, or skipped) and
how far the group offset may advance. Pure bookkeeping: no I/O, no awaits.

Per partition, deliveries are kept in the order they were sent; the commit point is the last one of
the leading run of done deliveries, so an offset never passes an event the application has not
acknowledged, even when acknowledgements arrive out of order. Entries keep the delivery's position
only (its event is dropped), so the window of un-acknowledged events costs no payload memory.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from hawser.bus import Delivery
from hawser.events import CloudEvent

#: Stands in for the event of a delivery kept only to be committed (commits use its position).
_POSITION_ONLY = CloudEvent({"specversion": "1.0", "id": "-", "source": "-", "type": "-"})

TP = tuple[str, int]


class _Entry:
    __slots__ = ("delivery", "done")

    def __init__(self, delivery: Delivery, done: bool) -> None:
        self.delivery = delivery
        self.done = done


class AckTracker:
    """Sent deliveries and their acknowledgements. With `committing=False` (no consumer group) only
    the packet ids in flight are kept."""

    def __init__(self, *, committing: bool) -> None:
        self._committing = committing
        self._pending: dict[TP, deque[_Entry]] = {}
        self._inflight: dict[int, _Entry | None] = {}
        self._ready: dict[TP, Delivery] = {}

    @property
    def inflight(self) -> int:
        """QoS 1 deliveries sent and not yet acknowledged."""
        return len(self._inflight)

    def sent(self, delivery: Delivery, packet_id: int | None = None) -> None:
        """`delivery` was written (QoS 1: as `packet_id`, done once acknowledged) or skipped (done)."""
        if packet_id is not None and packet_id in self._inflight:
            raise ValueError(f"packet id {packet_id} is still in flight")
        if not self._committing:
            if packet_id is not None:
                self._inflight[packet_id] = None
            return
        tp = (delivery.topic, delivery.partition)
        slim = dataclasses.replace(delivery, event=_POSITION_ONLY)
        queue = self._pending.get(tp)
        if packet_id is None and not queue:
            self._ready[tp] = slim  # nothing before it is outstanding: committable at once
            return
        entry = _Entry(slim, done=packet_id is None)
        if queue is None:
            queue = self._pending[tp] = deque()
        queue.append(entry)
        if packet_id is not None:
            self._inflight[packet_id] = entry

    def acked(self, packet_id: int) -> bool:
        """The application acknowledged `packet_id`; False if it was not in flight here."""
        if packet_id not in self._inflight:
            return False
        entry = self._inflight.pop(packet_id)
        if entry is not None:
            entry.done = True
            self._advance((entry.delivery.topic, entry.delivery.partition))
        return True

    def _advance(self, tp: TP) -> None:
        queue = self._pending[tp]
        while queue and queue[0].done:
            self._ready[tp] = queue.popleft().delivery
        if not queue:
            del self._pending[tp]

    def take_commits(self) -> list[Delivery]:
        """The delivery to commit for each partition that advanced since the last call."""
        ready = list(self._ready.values())
        self._ready.clear()
        return ready

    def abandon(self) -> int:
        """Forget every un-acknowledged delivery (the subscription ends); returns how many there were.
        What was done before the first of them stays committable."""
        count = len(self._inflight)
        self._inflight.clear()
        self._pending.clear()
        return count


__all__ = ["AckTracker"]
