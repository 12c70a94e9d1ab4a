"""What only the Kafka bus promises beyond the contract: sends fail within the timeout while the broker
is down and work again once it is back, with every acknowledged event in the topic; and our binary-mode
headers are exactly what the `cloudevents` SDK's Kafka binding writes and reads."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from hawser.bus._kafka_send import Deadlines
from hawser.bus.kafka import KafkaBus
from hawser.errors import BusUnavailable, UnknownTopic
from hawser.events import CloudEvent, EventOrigin, new_event
from tests.bus.test_contract import KEYS, event, take

SEND_TIMEOUT_S = 2.0


async def read_all_ids(bootstrap: str, topic: str, partitions: int, wanted: set[str]) -> set[str]:
    """Every event id in the topic, read from the beginning until `wanted` is covered (or a deadline)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: set[str] = set()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(30):
            while not wanted <= seen:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.update(CloudEvent.from_kafka(r.headers, r.value).id for r in records)
    finally:
        await consumer.stop()
    return seen


async def count_records(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return sum(int(ends[tp]) - int(starts[tp]) for tp in tps)


@pytest.mark.kafka
async def test_sends_fail_within_the_timeout_while_the_broker_is_down_then_recover(
    kafka: Any, topic: str
) -> None:
    acknowledged: list[str] = []

    async def send(n: int) -> None:
        item = event(n)
        await bus.send(topic, item, KEYS[n % len(KEYS)])
        acknowledged.append(item.id)

    async with KafkaBus(kafka.bootstrap, send_timeout_s=SEND_TIMEOUT_S) as bus:
        await bus.ensure_topic(topic)
        for n in range(12):
            await send(n)
        other = KafkaBus(kafka.bootstrap, send_timeout_s=SEND_TIMEOUT_S)
        await other.start()
        await asyncio.to_thread(kafka.stop)
        try:
            with pytest.raises(BusUnavailable):
                await other.send(topic, event(0), KEYS[0])
            async with asyncio.timeout(2 * SEND_TIMEOUT_S + 1.0):  # gives up what it cannot flush
                await other.aclose()
            started = time.monotonic()
            outcomes = await asyncio.gather(*(send(n) for n in range(12)), return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(o, BusUnavailable) for o in outcomes), outcomes
            assert all((o.retry_after or 0) >= 1 for o in outcomes if isinstance(o, BusUnavailable))
            assert elapsed < SEND_TIMEOUT_S + 1.0
        finally:
            await asyncio.to_thread(kafka.start)
        async with asyncio.timeout(60):  # the producer reconnects by itself
            while True:
                try:
                    await send(100)
                    break
                except BusUnavailable:
                    continue  # each attempt is bounded by the send timeout
        for n in range(12):
            await send(n)
    assert len(acknowledged) == 25
    assert set(acknowledged) <= await read_all_ids(kafka.bootstrap, topic, 3, set(acknowledged))


@pytest.mark.kafka
async def test_closing_while_the_broker_is_down_fails_every_queued_record_and_leaves_no_task(
    kafka: Any, topic: str
) -> None:
    """Batches queued for every partition (one in flight, one in aiokafka's queue, the rest waiting to be
    handed over) when the bus closes without its broker: `aclose` gives up within its bound, each send
    is told `BusUnavailable`, and no shipper task is left behind (checked by the suite's fixture)."""
    bus = KafkaBus(kafka.bootstrap, partitions=3, send_timeout_s=SEND_TIMEOUT_S, max_batch_bytes=4096)
    await bus.start()
    try:
        await bus.ensure_topic(topic)
        await bus.send(topic, event(0), KEYS[0])
        await asyncio.to_thread(kafka.stop)
        events = [event(n, data=b'{"pad": "%s"}' % (b"x" * 1000)) for n in range(60)]
        sends = asyncio.gather(*(bus.send(topic, e, KEYS[n % len(KEYS)]) for n, e in enumerate(events)),
                               return_exceptions=True)
        await asyncio.sleep(0.5)
        async with asyncio.timeout(2 * SEND_TIMEOUT_S + 1.0):
            await bus.aclose()
        outcomes = await sends
        assert all(isinstance(outcome, BusUnavailable) for outcome in outcomes), outcomes
    finally:
        await bus.aclose()
        await asyncio.to_thread(kafka.start)


async def test_start_reports_an_unreachable_broker(unused_tcp_port: int) -> None:
    bus = KafkaBus(f"127.0.0.1:{unused_tcp_port}", send_timeout_s=SEND_TIMEOUT_S)
    with pytest.raises(BusUnavailable) as caught:
        await bus.start()
    await bus.aclose()
    # What a device is told (the 503 body) names no address and no exception; the cause is chained.
    assert str(unused_tcp_port) not in caught.value.detail
    assert "Error" not in caught.value.detail
    assert caught.value.__cause__ is not None


def _sample() -> CloudEvent:
    origin = EventOrigin("my-app", "a-uid", "dev 1/ü", "d-uid", "gw", "g-uid")
    item = new_event(origin, channel="temp", data=b'{"t": 21.5}', instance="i-1",
                     content_type="application/json", data_schema="urn:schema:1")
    # Fixed time with microseconds, so that the SDK's datetime round trip writes the same text.
    return CloudEvent({**item.attributes, "time": "2026-01-02T03:04:05.678901Z"}, item.data)


def _as_sdk(item: CloudEvent) -> SdkEvent:
    attributes: dict[str, Any] = dict(item.attributes)
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    return SdkEvent(attributes=attributes, data=item.data)


@pytest.mark.parametrize("content_type", [None, "application/json"])
@pytest.mark.parametrize("data_schema", [None, "urn:schema:1"])
def test_headers_encoded_once_per_template_equal_the_generic_mapping(
    content_type: str | None, data_schema: str | None
) -> None:
    origin = EventOrigin("my-app", "a-uid", "dev 1/ü", "d-uid", "gw", "g-uid", extra={"unit": "°C"})
    item = new_event(origin, channel="temp", data=b"1", instance="i-1", content_type=content_type,
                     data_schema=data_schema, event_type="io.drogue.connection.v1")
    assert item.template is not None
    generic = CloudEvent(item.attributes, item.data)  # no template: every attribute encoded here
    assert sorted(item.kafka_headers()) == sorted(generic.kafka_headers())
    assert len(item.kafka_headers()) == len(item.attributes)


def test_our_headers_are_what_the_sdk_kafka_binding_writes() -> None:
    ours = _sample()
    message = to_binary(_as_sdk(ours), JSONFormat())
    assert dict(ours.kafka_headers()) == message.headers
    assert len(ours.kafka_headers()) == len(message.headers)
    assert message.value == ours.data
    assert message.key == ours.attributes["partitionkey"]


def test_we_read_what_the_sdk_kafka_binding_writes() -> None:
    original = _sample()
    message = to_binary(_as_sdk(original), JSONFormat())
    assert CloudEvent.from_kafka(list(message.headers.items()), message.value) == original


@pytest.mark.kafka
async def test_the_sdk_reads_our_records_from_kafka(kafka_bootstrap: str, topic: str) -> None:
    sent = _sample()
    async with KafkaBus(kafka_bootstrap) as bus:
        await bus.ensure_topic(topic)
        async with await bus.subscribe([topic]) as subscription:
            await bus.send(topic, sent, sent.attributes["partitionkey"])
            (delivery,) = await take(subscription, 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, delivery.partition)
        consumer.assign([tp])
        consumer.seek(tp, delivery.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    parsed = from_binary(KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value),
                         JSONFormat())
    attributes = parsed.get_attributes()
    assert isinstance(attributes["time"], datetime)
    assert attributes["time"] == datetime.fromisoformat(sent.attributes["time"])
    assert {k: v for k, v in attributes.items() if k != "time"} == {
        k: v for k, v in sent.attributes.items() if k != "time"}
    assert parsed.get_data() == {"t": 21.5}
    assert delivery.event == sent


@pytest.mark.kafka
async def test_concurrent_sends_filling_many_small_batches_keep_every_event_and_its_order(
    kafka_bootstrap: str, topic: str
) -> None:
    """Hawser batches records itself (hawser/bus/_kafka_batches.py): with batches of 4 KiB, 600 events
    of 1 KiB sent at once fill and hand over about 150 batches, every one acknowledged, each key's
    events in the order they were sent, and one record larger than a whole batch still goes through."""
    events = [event(n, data=b'{"pad": "%s"}' % (b"x" * 1000)) for n in range(600)]
    big = event(600, data=b'{"pad": "%s"}' % (b"y" * 10_000))
    async with KafkaBus(kafka_bootstrap, partitions=3, max_batch_bytes=4096, send_timeout_s=20) as bus:
        await bus.ensure_topic(topic)
        async with await bus.subscribe([topic]) as subscription:
            # Tasks start in creation order, so the bus sees the sends in this order.
            await asyncio.gather(*(bus.send(topic, e, KEYS[n % len(KEYS)]) for n, e in enumerate(events)))
            await bus.send(topic, big, KEYS[0])
            got = await take(subscription, len(events) + 1, timeout=60)
    assert {d.event.id for d in got} == {e.id for e in [*events, big]}
    for key in KEYS:
        expected = [e.id for n, e in enumerate(events) if KEYS[n % len(KEYS)] == key]
        if key == KEYS[0]:
            expected.append(big.id)
        assert [d.event.id for d in got if d.key == key] == expected, key


@pytest.mark.kafka
async def test_an_oversize_record_fails_alone_and_its_partition_keeps_working(kafka_bootstrap: str, topic: str) -> None:
    """The broker refuses a batch over its `message.max.bytes` after the idempotent producer gave the
    batch its sequence numbers, and then refuses every later batch of that partition as out of order,
    for the life of the producer. aiokafka's `send` refused such a record before queueing it (over its
    `max_request_size`); batching ourselves, we must too."""
    async with KafkaBus(kafka_bootstrap, partitions=1, send_timeout_s=SEND_TIMEOUT_S) as bus:
        await bus.ensure_topic(topic)
        await bus.send(topic, event(0), KEYS[0])
        with pytest.raises(BusUnavailable):
            await bus.send(topic, event(1, data=b"x" * 1_100_000), KEYS[0])
        for n in range(2, 5):
            await bus.send(topic, event(n), KEYS[0])
    assert await count_records(kafka_bootstrap, topic, 1) == 4


@pytest.mark.kafka
async def test_sends_to_a_topic_deleted_elsewhere_fail_as_unknown_and_never_reach_its_successor(
    kafka_bootstrap: str, topic: str
) -> None:
    """Another instance deleted the application's topic; this one still knows its partitions, so its
    records go to batches the broker no longer takes. Every such send fails as `UnknownTopic` (not only
    the first to ask), and none of these records, each reported failed, is written later into a new
    topic of the same name: batches queued behind the refused one were handed over one send timeout
    after another, into the new application's topic once it existed."""
    events = [event(n, data=b'{"pad": "%s"}' % (b"x" * 1000)) for n in range(40)]
    async with KafkaBus(kafka_bootstrap, partitions=1) as elsewhere, \
            KafkaBus(kafka_bootstrap, partitions=1, send_timeout_s=SEND_TIMEOUT_S, max_batch_bytes=4096) as bus:
        await elsewhere.ensure_topic(topic)
        await bus.send(topic, event(0), KEYS[0])
        await elsewhere.delete_topic(topic)
        sends = asyncio.gather(*(bus.send(topic, e, KEYS[0]) for e in events), return_exceptions=True)
        await asyncio.sleep(SEND_TIMEOUT_S + 1.0)
        await elsewhere.ensure_topic(topic)  # a new application of the same name
        outcomes = await sends
        await asyncio.sleep(2 * SEND_TIMEOUT_S)
        assert await count_records(kafka_bootstrap, topic, 1) == 0
        assert all(isinstance(outcome, UnknownTopic) for outcome in outcomes), [
            (outcome, getattr(outcome, "__cause__", None)) for outcome in outcomes
            if not isinstance(outcome, UnknownTopic)]
        await bus.send(topic, event(1), KEYS[0])  # the new topic works for the same bus
    assert await count_records(kafka_bootstrap, topic, 1) == 1


async def test_a_deadline_earlier_than_those_queued_expires_on_time() -> None:
    """A send that first waited for its topic's partitions queues its deadline after later ones; it
    still expires at its own (a send never waits longer than the send timeout)."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    late: asyncio.Future[None] = loop.create_future()
    early: asyncio.Future[None] = loop.create_future()
    deadlines.add(loop.time() + 5.0, late)
    deadlines.add(loop.time() + 0.05, early)
    await asyncio.sleep(0.3)
    assert early.done()
    assert isinstance(early.exception(), TimeoutError)
    assert not late.done()
    deadlines.close()
    assert isinstance(late.exception(), TimeoutError)


async def test_settled_waiters_behind_a_pending_one_are_not_kept() -> None:
    """One record slow to be acknowledged (a partition without its leader) holds the head of the queue
    for the whole send timeout: the waiters settled behind it are dropped all the same."""
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    slow: asyncio.Future[None] = loop.create_future()
    deadlines.add(loop.time() + 60, slow)
    for _ in range(100_000):
        acknowledged: asyncio.Future[None] = loop.create_future()
        deadlines.add(loop.time() + 60, acknowledged)
        acknowledged.set_result(None)
    assert len(deadlines._queue) <= 2 * Deadlines._COMPACT_MIN
    deadlines.close()
    assert isinstance(slow.exception(), TimeoutError)
