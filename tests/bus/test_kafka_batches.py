"""Hawser's Kafka batching (hawser/bus/_kafka_batches.py) against a stand-in for aiokafka's producer, so
that what reaches `send_batch`, and when, is seen exactly: a batch nobody waits for any more is never
handed over, a deleted topic's records fail at once, an oversize record fails alone, order holds when
a hand-over fails, and nothing is kept for partitions that are done."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder

from hawser.bus._kafka_batches import Batcher
from hawser.errors import UnknownTopic

LINGER_S = 0.005
GIVE_UP_S = 0.2
MAX_RECORD = 64 * 1024


class FakeProducer:
    """`create_batch` and `send_batch` as aiokafka's producer: `send_batch` queues a batch and returns its
    delivery future, but first waits while `held` (as aiokafka waits while the partition's previous batch
    is still queued) and fails with `refuse` if set."""

    def __init__(self, batch_bytes: int = 4096) -> None:
        self.batch_bytes = batch_bytes
        #: (topic, partition, record count, delivery) of every batch handed over, in order.
        self.handed: list[tuple[str, int, int, asyncio.Future[None]]] = []
        self.released = asyncio.Event()
        self.released.set()
        self.refuse: BaseException | None = None

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        await asyncio.sleep(0)
        await self.released.wait()
        if self.refuse is not None:
            raise self.refuse
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.handed.append((topic, partition, batch.record_count(), delivery))
        return delivery

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def deliver_all(self) -> None:
        for *_, delivery in self.handed:
            if not delivery.done():
                delivery.set_result(None)


def batcher(producer: FakeProducer, partitions: int = 1) -> Batcher:
    def first(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        return all_partitions[0]

    return Batcher(producer, linger_s=LINGER_S, partitioner=first, give_up_s=GIVE_UP_S, max_record_bytes=MAX_RECORD)


def append(batches: Batcher, topic: str = "t", value: bytes = b"x" * 1000) -> asyncio.Future[None]:
    return batches.append(topic, [0], b"key", value, [("ce_id", b"1")])


async def until(condition: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def test_a_batch_whose_senders_all_gave_up_is_never_handed_over() -> None:
    """A dead broker (or a deleted topic) holds the partition's queue: batches waiting behind it whose
    senders were all told the bus is unavailable, or went away, must not be written when it moves
    again (at-least-once allows it, but a backlog nobody waits for would then land late, possibly in a
    new topic of the same name)."""
    producer = FakeProducer()
    batches = batcher(producer)
    first = append(batches)
    await until(lambda: len(producer.handed) == 1)
    producer.hold()  # the first batch is not drained: the next hand-over waits
    waiting = append(batches)  # its sender will time out
    await asyncio.sleep(LINGER_S * 4)
    gone = [append(batches) for _ in range(3)]  # their senders go away
    for future in gone:
        future.cancel()
    await asyncio.sleep(GIVE_UP_S * 1.5)
    producer.release()
    await asyncio.sleep(LINGER_S * 4)
    assert len(producer.handed) == 1
    assert isinstance(waiting.exception(), TimeoutError | KafkaTimeoutError)
    producer.deliver_all()
    await first
    await until(lambda: not batches._partitions)


async def test_records_of_a_deleted_topic_fail_at_once_and_leave_nothing_behind() -> None:
    producer = FakeProducer()
    batches = batcher(producer)
    first = append(batches, "gone")
    await until(lambda: len(producer.handed) == 1)
    producer.hold()
    queued = [append(batches, "gone") for _ in range(10)]  # in closed batches, one of them in send_batch
    await asyncio.sleep(LINGER_S * 4)
    other = append(batches, "kept")
    deleted = UnknownTopic("no topic 'gone'")
    batches.forget("gone", deleted)
    await asyncio.sleep(0)
    assert all(future.exception() is deleted for future in queued)
    producer.release()
    await until(lambda: len(producer.handed) == 2)
    assert [topic for topic, *_ in producer.handed] == ["gone", "kept"]
    producer.deliver_all()
    await asyncio.gather(first, other)
    await until(lambda: not batches._partitions)


async def test_partitions_done_with_are_not_kept() -> None:
    """Topics come and go with their applications: the state of a partition with nothing open, queued
    or in flight is dropped."""
    producer = FakeProducer()
    batches = batcher(producer)
    sent = [append(batches, f"app-{n}") for n in range(50)]
    await until(lambda: len(producer.handed) == 50)
    producer.deliver_all()
    await asyncio.gather(*sent)
    await until(lambda: not batches._partitions)
    failing = append(batches, "refused")
    producer.refuse = KafkaTimeoutError()
    with pytest.raises(KafkaTimeoutError):
        await failing
    await until(lambda: not batches._partitions)


async def test_an_oversize_record_fails_alone() -> None:
    """aiokafka's `send` refused a record over `max_request_size`; batching ourselves must too: the
    broker refuses such a batch after it took its sequence numbers, and every later batch of the
    partition is then refused as out of order."""
    producer = FakeProducer(batch_bytes=4096)
    batches = batcher(producer)
    before = append(batches)
    with pytest.raises(MessageSizeTooLargeError):
        append(batches, value=b"y" * MAX_RECORD)
    after = append(batches)
    await until(lambda: sum(count for _, _, count, _ in producer.handed) == 2)
    assert all(count for _, _, count, _ in producer.handed)  # no empty batch: it would be acknowledged
    producer.deliver_all()
    await asyncio.gather(before, after)
    # The largest record that fits the limit still goes, alone in its batch.
    largest = append(batches, value=b"z" * (MAX_RECORD - 200))
    await until(lambda: len(producer.handed) == 3)
    producer.deliver_all()
    await largest


async def test_a_refused_hand_over_fails_its_records_only_and_keeps_the_order() -> None:
    producer = FakeProducer()
    batches = batcher(producer)
    first = append(batches)
    await until(lambda: len(producer.handed) == 1)
    producer.refuse = KafkaTimeoutError()
    refused = append(batches)
    await until(lambda: refused.done())
    producer.refuse = None
    later = [append(batches) for _ in range(9)]  # several batches of 4 KiB
    await until(lambda: sum(count for _, _, count, _ in producer.handed) == 10)
    producer.deliver_all()
    await asyncio.gather(first, *later)
    assert isinstance(refused.exception(), KafkaTimeoutError)
    assert producer.handed[0][2] == 1  # then the 9 later records: the refused one never went


async def test_abort_fails_open_queued_and_waiting_records_and_ends_the_shippers() -> None:
    producer = FakeProducer()
    batches = batcher(producer)
    first = append(batches)
    await until(lambda: len(producer.handed) == 1)
    producer.hold()
    waiting = [append(batches) for _ in range(10)]
    await asyncio.sleep(LINGER_S * 4)
    opened = append(batches)
    error = ConnectionError("closed while Kafka was away")
    batches.abort(error)
    await asyncio.sleep(0)
    assert all(future.exception() is error for future in [*waiting, opened])
    with pytest.raises(RuntimeError):
        append(batches)
    producer.release()
    producer.deliver_all()
    await first
    assert len(producer.handed) == 1
