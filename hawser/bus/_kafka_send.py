"""What every Kafka send shares: the partitioner and the deadlines. Nothing here does I/O.

`KeyPartitioner` is Kafka's default partitioning (murmur2 of the key, as the Java client), with
each key's hash remembered. `Deadlines` fails each waiting send at its deadline with one timer for
all of them, instead of a timer per record.
"""

from __future__ import annotations

import asyncio
import bisect
import collections

from aiokafka.partitioner import DefaultPartitioner, murmur2


class KeyPartitioner:
    """Kafka's default partitioning (murmur2 of the key, as the Java client and aiokafka do), with
    each key's hash remembered: aiokafka computes murmur2 in pure Python on every send, a visible
    share of the cost of a message, while a gateway sends for the same few devices again and again.
    The memory is bounded by dropping it all when full (a rare, cheap rebuild)."""

    def __init__(self, max_keys: int = 65536) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys
        self._random = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._random(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class Deadlines:
    """Fails each waiter with TimeoutError at its deadline, with one timer for them all. Every send has
    the same timeout, so deadlines mostly arrive in the order they are added: a queue sorted by
    deadline whose head holds the next one to expire (a send that first waited for its topic's
    partitions comes with an earlier deadline, and is put in its place). Settled waiters are dropped
    from the head as new ones come (acknowledgements come roughly in order too), and all at once
    when the queue doubled since (one partition slow to answer holds the head), so the queue holds
    about what is in flight, at most twice."""

    _COMPACT_MIN = 1024

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[float, asyncio.Future[None]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._compact_at = self._COMPACT_MIN

    def add(self, deadline: float, waiter: asyncio.Future[None]) -> None:
        queue = self._queue
        while queue and queue[0][1].done():
            queue.popleft()
        if len(queue) >= self._compact_at:
            queue = self._queue = collections.deque(entry for entry in queue if not entry[1].done())
            self._compact_at = max(self._COMPACT_MIN, 2 * len(queue))
        if queue and deadline < queue[-1][0]:
            bisect.insort(queue, (deadline, waiter), key=_deadline_of)
            if queue[0][1] is waiter and self._timer is not None:
                self._timer.cancel()
                self._timer = None
        else:
            queue.append((deadline, waiter))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(queue[0][0], self._expire)

    def _expire(self) -> None:
        self._timer = None
        queue = self._queue
        now = asyncio.get_running_loop().time()
        while queue and (queue[0][1].done() or queue[0][0] <= now):
            _, waiter = queue.popleft()
            if not waiter.done():
                waiter.set_exception(TimeoutError())
        if queue:
            self._timer = asyncio.get_running_loop().call_at(queue[0][0], self._expire)

    def close(self) -> None:
        """Expire every waiter left (nothing will acknowledge them now) and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            _, waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(TimeoutError())


def _deadline_of(entry: tuple[float, asyncio.Future[None]]) -> float:
    return entry[0]


__all__ = ["Deadlines", "KeyPartitioner"]
