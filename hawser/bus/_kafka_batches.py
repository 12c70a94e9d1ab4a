"""Hawser's own record batching in front of aiokafka's producer: records are appended to one open
`BatchBuilder` per partition and whole batches go to `send_batch`.

Why: aiokafka's per-record `send` costs about 15 µs of Python per record (metadata check, partitioner,
serializers, a builder call and futures), while appending to a builder and handing over whole batches
costs about 3 µs (measured against the test broker, docs/performance.md). Kafka's semantics stay the
producer's: idempotence (sequence numbers are given as batches are drained), retries, acks=all.

Rules kept here: a record's future settles only with its batch's acknowledgement (or its error);
records keep their order per partition (one batch is open per partition, and closed batches are
handed over by one task per partition, in order). When is a batch closed: when full; at the end of
the event-loop iteration that opened it if nothing of its partition is in flight (so a lone record
waits for nothing); otherwise when the batch in flight is acknowledged, or `linger_s` after its first
record, whichever comes first. So batches grow with the load and add no latency without it (a
fixed linger made every record of a quiet partition wait it out). Nothing here creates topics or
knows CloudEvents.

What is never handed over to aiokafka (whose idempotent producer then retries a batch until the broker
takes it): a batch whose senders have all given up (`give_up_s` after it closed, every sender has been
told the bus is unavailable, or went away), so that a backlog left by a dead broker or a deleted topic
is not written late, possibly into a new topic of the same name; and a record larger than
`max_record_bytes` (a batch the broker refuses still takes its sequence numbers, and every later batch
of the partition would then be refused as out of order, for the life of the producer).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

log = logging.getLogger(__name__)

Partitioner = Callable[[bytes | None, list[int], list[int]], int]

#: Bytes a record batch adds to its records (aiokafka's `DefaultRecordBatchBuilder.HEADER_STRUCT`).
BATCH_OVERHEAD = 61


class _Partition:
    """The open batch of one topic-partition, the closed ones waiting to be handed over, and the task
    handing them over."""

    __slots__ = ("builder", "closed", "futures", "inflight", "partition", "shipper", "shipping", "timer", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.builder: Any = None
        self.futures: list[asyncio.Future[None]] = []
        #: When the open batch closes by itself: at the end of this loop iteration, or at its linger.
        self.timer: asyncio.Handle | None = None
        #: Batches handed over and not yet acknowledged (or failed).
        self.inflight = 0
        #: Closed batches, oldest first: (builder, its records' futures, when all their senders gave up).
        self.closed: deque[tuple[Any, list[asyncio.Future[None]], float]] = deque()
        self.shipper: asyncio.Task[None] | None = None
        #: The futures of the batch the shipper is handing over (in `send_batch`).
        self.shipping: list[asyncio.Future[None]] | None = None


class Batcher:
    """Appends records to per-partition batches of `producer` (an aiokafka `AIOKafkaProducer`).

    `give_up_s` is how long a sender waits for its record at most (the bus's send timeout): a batch
    not handed over by then has nobody waiting for it any more. `max_record_bytes` bounds a record in
    its batch and must be at least the producer's batch size plus `BATCH_OVERHEAD`, so that a record
    over it never fits beside others (it is refused alone)."""

    def __init__(self, producer: Any, *, linger_s: float, partitioner: Partitioner, give_up_s: float,
                 max_record_bytes: int) -> None:
        self._producer = producer
        self._linger_s = linger_s
        self._partitioner = partitioner
        self._give_up_s = give_up_s
        self._max_record_bytes = max_record_bytes - BATCH_OVERHEAD
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._closing = False

    def append(
        self, topic: str, partitions: list[int], key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        """Add a record; the future settles when Kafka acknowledged its batch (or fails with the error).
        Raises `MessageSizeTooLargeError` for a record larger than `max_record_bytes`."""
        if self._closing:
            raise RuntimeError("the batcher is closed")
        partition = self._partitioner(key, partitions, partitions)
        slot = self._partitions.get((topic, partition))
        if slot is None:
            slot = self._partitions[(topic, partition)] = _Partition(topic, partition)
        loop = asyncio.get_running_loop()
        if slot.builder is None:
            self._open(slot, loop)
        added = slot.builder.append(timestamp=None, key=key, value=value, headers=headers)
        if added is None:
            # Full (a first record always fits, however large): hand it over and start the next one.
            self._close(slot)
            self._open(slot, loop)
            added = slot.builder.append(timestamp=None, key=key, value=value, headers=headers)
        if added.size > self._max_record_bytes:
            # Larger than any batch, so alone in a batch just opened: drop that batch.
            self._close(slot)
            raise MessageSizeTooLargeError(
                f"a record of {added.size} bytes is over the {self._max_record_bytes + BATCH_OVERHEAD} allowed")
        future: asyncio.Future[None] = loop.create_future()
        slot.futures.append(future)
        return future

    def forget(self, topic: str, error: BaseException) -> None:
        """`topic` is gone: fail its records not yet handed over with `error`, and drop its state.
        Batches already handed over end by themselves (aiokafka fails them once their partition has
        had no leader for its request timeout)."""
        for key in [key for key in self._partitions if key[0] == topic]:
            self._fail(self._partitions.pop(key), error)

    def _open(self, slot: _Partition, loop: asyncio.AbstractEventLoop) -> None:
        slot.builder = self._producer.create_batch()
        slot.futures = []
        if slot.inflight or slot.closed:
            slot.timer = loop.call_later(self._linger_s, self._close, slot)
        else:
            slot.timer = loop.call_soon(self._close, slot)

    def _close(self, slot: _Partition) -> None:
        """Hand the open batch of `slot` to its shipper (started if idle)."""
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        builder, futures = slot.builder, slot.futures
        slot.builder, slot.futures = None, []
        if builder is None or not futures:
            self._forget_if_idle(slot)
            return
        builder.close()
        loop = asyncio.get_running_loop()
        slot.closed.append((builder, futures, loop.time() + self._give_up_s))
        if slot.shipper is None:
            slot.shipper = loop.create_task(self._ship(slot), name=f"kafka-batches:{slot.topic}:{slot.partition}")

    async def _ship(self, slot: _Partition) -> None:
        """Hand the closed batches of one partition to aiokafka, in order. `send_batch` waits while
        the partition's previous batch is still queued, which is what keeps the order."""
        loop = asyncio.get_running_loop()
        try:
            while slot.closed:
                builder, futures, give_up_at = slot.closed.popleft()
                if loop.time() >= give_up_at or all(future.done() for future in futures):
                    _settle(futures, KafkaTimeoutError())  # nobody is waiting: not written late
                    continue
                slot.shipping = futures
                try:
                    # Given up (or cancelled) while `send_batch` waits for the partition's previous
                    # batch to be drained, the batch is not queued: `send_batch` returns as soon as
                    # it queues, without waiting for anything after.
                    async with asyncio.timeout_at(give_up_at):
                        delivery = await self._producer.send_batch(builder, slot.topic, partition=slot.partition)
                except Exception as error:  # TimeoutError, unknown partition, KafkaTimeoutError, closed
                    _settle(futures, error)
                    continue
                except asyncio.CancelledError:
                    _settle(futures, ConnectionError("the Kafka bus was closed"))
                    raise
                finally:
                    slot.shipping = None
                slot.inflight += 1
                delivery.add_done_callback(lambda done, futures=futures: self._acknowledged(slot, done, futures))
        finally:
            slot.shipper = None
            self._forget_if_idle(slot)

    def _acknowledged(self, slot: _Partition, delivery: asyncio.Future[Any],
                      futures: list[asyncio.Future[None]]) -> None:
        slot.inflight -= 1
        _settled(delivery, futures)
        if not slot.inflight and slot.futures:
            self._close(slot)  # what gathered while the pipe was busy goes now
        else:
            self._forget_if_idle(slot)

    def _forget_if_idle(self, slot: _Partition) -> None:
        """Drop the state of a partition with nothing open, queued or in flight (topics come and go
        with their applications: their partitions must not stay here forever)."""
        if slot.builder is None and not slot.closed and not slot.inflight and slot.shipper is None:
            key = (slot.topic, slot.partition)
            if self._partitions.get(key) is slot:
                del self._partitions[key]

    async def aclose(self) -> None:
        """Hand over every open batch and wait until aiokafka holds them all (the producer's own
        `flush`/`stop` then delivers them)."""
        self._closing = True
        for slot in list(self._partitions.values()):
            self._close(slot)
        shippers = [slot.shipper for slot in self._partitions.values() if slot.shipper is not None]
        if shippers:
            await asyncio.gather(*shippers, return_exceptions=True)

    def abort(self, error: BaseException) -> None:
        """Fail every record not yet handed over (the producer is being stopped without its broker)."""
        self._closing = True
        for slot in self._partitions.values():
            self._fail(slot, error)

    @staticmethod
    def _fail(slot: _Partition, error: BaseException) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        _settle(slot.futures, error)
        slot.futures, slot.builder = [], None
        while slot.closed:
            _settle(slot.closed.popleft()[1], error)
        if slot.shipping is not None:
            _settle(slot.shipping, error)
        if slot.shipper is not None:
            slot.shipper.cancel()  # cancelled in `send_batch`, the batch was not queued


def _settled(delivery: asyncio.Future[Any], futures: list[asyncio.Future[None]]) -> None:
    if delivery.cancelled():
        _settle(futures, ConnectionError("the batch was cancelled"))
        return
    error = delivery.exception()
    if error is None:
        for future in futures:
            if not future.done():
                future.set_result(None)
    else:
        _settle(futures, error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
            future.exception()  # retrieved: a sender that gave up (deadline) is no longer waiting


__all__ = ["BATCH_OVERHEAD", "Batcher", "Partitioner"]
