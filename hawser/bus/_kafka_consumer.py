"""Subscriptions of the Kafka bus: one aiokafka consumer each, positioned before `subscribe` returns.

Without a group the consumer is assigned every partition and sought to the end. With a group it joins
(auto commit off, `auto_offset_reset="latest"`), and on every assignment it commits the position of
each partition the group has never committed, so a new group keeps what is sent after it first joined.
Records fetched ahead are dropped when their partition is revoked (the next owner, maybe this one again,
reads them from the last commit), and a subscription whose topic was deleted ends with `UnknownTopic`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaError

from hawser._resources import AsyncResource
from hawser.bus.base import Delivery
from hawser.errors import BusUnavailable, UnknownTopic
from hawser.events import CloudEvent

log = logging.getLogger(__name__)

#: Joining a group waits for every member to rejoin, which may take longer than one send.
_MIN_JOIN_S = 30.0
#: What one fetch may bring into memory (Kafka still returns one record larger than this).
FETCH_MAX_BYTES = 1024 * 1024
#: Told to clients; the cause goes to the log.
UNAVAILABLE = "the event bus is unavailable"


class KafkaSubscription(AsyncResource):
    """An open consumer; see the module docstring for how it is positioned."""

    def __init__(self, consumer: Any, group: str | None,
                 on_close: Callable[[KafkaSubscription], None]) -> None:
        self._consumer = consumer
        self._group = group
        self._on_close = on_close
        self._buffer: deque[Any] = deque()
        self._closed = False
        self._deleted: str | None = None
        self.topics: frozenset[str] = frozenset()
        self.assigned = asyncio.Event()
        self.assign_error: BaseException | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        consumer = self._consumer
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._deleted is not None:
                raise UnknownTopic(f"the topic {self._deleted!r} was deleted")
            while self._buffer:
                record = self._buffer.popleft()
                if TopicPartition(record.topic, record.partition) not in consumer.assignment():
                    continue  # revoked since it was fetched; its new owner reads it
                try:
                    event = CloudEvent.from_kafka(record.headers, record.value)
                except (ValueError, UnicodeDecodeError) as exc:
                    log.warning("skipping a record that is not a CloudEvent at %s/%d@%d: %s",
                                record.topic, record.partition, record.offset, exc)
                    continue
                key = record.key.decode(errors="replace") if record.key is not None else None
                return Delivery(record.topic, record.partition, record.offset, key, event,
                                record.timestamp)
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            except ConsumerStoppedError:
                raise StopAsyncIteration from None
            except KafkaError as exc:
                log.warning("reading from Kafka failed", exc_info=exc)
                raise BusUnavailable(UNAVAILABLE) from exc
            for records in batches.values():
                self._buffer.extend(records)

    def holds(self, topic: str, partition: int) -> bool:
        return not self._closed and TopicPartition(topic, partition) in self._consumer.assignment()

    def topic_deleted(self, topic: str) -> None:
        """This bus deleted `topic`: end (a new topic of that name may belong to someone else)."""
        self._deleted = topic
        self._buffer = deque(r for r in self._buffer if r.topic != topic)

    def revoked(self, revoked: set[Any]) -> None:
        """Forget what was fetched of partitions taken away: whoever gets them next reads them from
        the last commit, and delivering them here as well would repeat them."""
        self._buffer = deque(r for r in self._buffer
                             if TopicPartition(r.topic, r.partition) not in revoked)

    async def commit(self, delivery: Delivery) -> None:
        if self._group is None:
            return
        tp = TopicPartition(delivery.topic, delivery.partition)
        if self._closed:
            log.warning("group %s: commit of %s@%d after the subscription closed is dropped (the "
                        "group may receive it again)", self._group, tp, delivery.offset)
            return
        try:
            await self._consumer.commit({tp: delivery.offset + 1})
        except (CommitFailedError, IllegalStateError) as exc:
            log.info("commit of %s@%d dropped, the partition moved: %s", tp, delivery.offset, exc)
        except KafkaError as exc:
            log.warning("committing to Kafka failed", exc_info=exc)
            raise BusUnavailable(UNAVAILABLE) from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        try:
            await self._consumer.stop()
        finally:
            self._on_close(self)

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Commit where the group starts on partitions it never committed; then report readiness."""
        consumer = self._consumer
        try:
            fresh = {}
            for tp in assigned:
                if await consumer.committed(tp) is None:
                    fresh[tp] = await consumer.position(tp)
            if fresh:
                await consumer.commit(fresh)
        except Exception as exc:
            self.assign_error = exc
            raise
        finally:
            self.assigned.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: KafkaSubscription) -> None:
        self._subscription = subscription

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self._subscription.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self._subscription.on_assigned(assigned)


async def open_subscription(
    bootstrap: str,
    partitions: Mapping[str, int],
    group: str | None,
    *,
    client_id: str,
    join_timeout_s: float,
    on_close: Callable[[KafkaSubscription], None],
) -> KafkaSubscription:
    """Start a consumer on `partitions` (topic -> partition count) and position it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id=client_id, group_id=group, enable_auto_commit=False,
        auto_offset_reset="latest", heartbeat_interval_ms=1000, fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=FETCH_MAX_BYTES,
    )
    subscription = KafkaSubscription(consumer, group, on_close)
    subscription.topics = frozenset(partitions)
    try:
        async with asyncio.timeout(max(join_timeout_s, _MIN_JOIN_S)):
            await consumer.start()
            if group is None:
                tps = [TopicPartition(t, p) for t, count in partitions.items() for p in range(count)]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
            else:
                consumer.subscribe(list(partitions), listener=_Listener(subscription))
                await subscription.assigned.wait()
                if subscription.assign_error is not None:
                    raise subscription.assign_error
    except (KafkaError, OSError, TimeoutError) as exc:
        await subscription.aclose()
        log.warning("cannot subscribe to %s on Kafka", sorted(partitions), exc_info=exc)
        raise BusUnavailable(UNAVAILABLE) from exc
    except BaseException:
        await subscription.aclose()
        raise
    return subscription
