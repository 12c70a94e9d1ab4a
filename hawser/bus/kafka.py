"""The Kafka `EventBus`: one idempotent aiokafka producer, an admin client for topics, one consumer per
subscription (see hawser/bus/_kafka_consumer.py).

CloudEvents travel in binary content mode (`ce_` headers, `content-type`, data as the value, the key as
UTF-8). With idempotence on, aiokafka never expires a batch but retries it until the broker takes it, so
a send waits for its acknowledgement only up to `send_timeout_s` and then reports `BusUnavailable`; the
record may still land once the broker is back (at least once), and the producer recovers by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code

from hawser.bus._kafka_consumer import KafkaSubscription, open_subscription
from hawser.bus.base import Subscription
from hawser.errors import BusUnavailable
from hawser.events import CloudEvent

log = logging.getLogger(__name__)

_NO_ERROR, _UNKNOWN_TOPIC, _TOPIC_EXISTS = 0, 3, 36
_POLL_S = 0.05


class KafkaBus:
    """The production `EventBus` on Apache Kafka."""

    def __init__(
        self,
        bootstrap: str,
        *,
        partitions: int = 3,
        replication_factor: int = 1,
        linger_ms: int = 5,
        send_timeout_s: float = 10.0,
        client_id: str = "hawser",
    ) -> None:
        self.bootstrap = bootstrap
        self._partitions = partitions
        self._replication_factor = replication_factor
        self._linger_ms = linger_ms
        self._timeout = send_timeout_s
        self._client_id = client_id
        self._retry_after = max(1, round(send_timeout_s))
        self._producer: Any = None
        self._admin_client: Any = None
        self._known: dict[str, int] = {}  # topic -> partitions, of topics seen to exist
        self._subscriptions: set[KafkaSubscription] = set()
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._producer is not None:
            return
        if self._closed:
            raise BusUnavailable("the Kafka bus is closed")
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, client_id=self._client_id, enable_idempotence=True,
            linger_ms=self._linger_ms, request_timeout_ms=int(self._timeout * 1000),
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self._client_id}-admin",
                                    request_timeout_ms=int(self._timeout * 1000))
        try:
            async with asyncio.timeout(self._timeout):
                await producer.start()
                await admin.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await producer.stop()
            await admin.close()
            raise BusUnavailable(f"cannot reach Kafka at {self.bootstrap}: {exc!r}",
                                 retry_after=self._retry_after) from exc
        self._producer, self._admin_client = producer, admin

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        producer, admin = self._producer, self._admin_client
        if producer is not None:
            try:
                await asyncio.wait_for(producer.flush(), self._timeout)
            except TimeoutError:
                # The broker is away and idempotent batches never expire, so `stop()` would wait
                # forever: stop the sender first (their senders were told BusUnavailable already).
                # aiokafka has no public way to give up, hence its private sender and accumulator.
                log.warning("closing the Kafka producer with records still unacknowledged")
                await producer._sender.close()
                producer._message_accumulator.fail_all(KafkaConnectionError("closed while Kafka was away"))
            await producer.stop()
        if admin is not None:
            await admin.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- topics -------------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        await self._ensure(topic, cached=False)  # another instance may have deleted it meanwhile

    async def _ensure(self, topic: str, *, cached: bool = True) -> int:
        """Create the topic if needed and wait for its leaders; return its partition count."""
        if cached and topic in self._known:
            return self._known[topic]
        topic_spec = NewTopic(topic, self._partitions, self._replication_factor)
        async with self._admin_call(f"create topic {topic}"):
            response = await self._admin().create_topics([topic_spec])
            for _name, code, message in response.topic_errors:
                if code not in (_NO_ERROR, _TOPIC_EXISTS):
                    raise for_code(code)(message)
            # Wait until every partition has a leader, so that an immediate send or subscribe works.
            while True:
                (described,) = await self._admin().describe_topics([topic])
                partitions = described["partitions"]
                if described["error_code"] == _NO_ERROR and partitions and all(
                        p["leader"] >= 0 for p in partitions):
                    self._known[topic] = len(partitions)
                    return len(partitions)
                await asyncio.sleep(_POLL_S)

    async def delete_topic(self, topic: str) -> None:
        self._known.pop(topic, None)
        async with self._admin_call(f"delete topic {topic}"):
            response = await self._admin().delete_topics([topic])
            for _name, code in response.topic_error_codes:
                if code not in (_NO_ERROR, _UNKNOWN_TOPIC):
                    raise for_code(code)()
            while True:  # deletion is asynchronous in the broker; wait until the topic is gone
                (described,) = await self._admin().describe_topics([topic])
                if described["error_code"] == _UNKNOWN_TOPIC:
                    return
                await asyncio.sleep(_POLL_S)

    # --- events -------------------------------------------------------------------------------------

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaBus.start() was not called")
        if self._closed:
            raise BusUnavailable("the Kafka bus is closed", retry_after=self._retry_after)
        delivery: asyncio.Future[Any] | None = None
        try:
            async with asyncio.timeout(self._timeout):
                delivery = await producer.send(topic, value=event.data, key=key.encode(),
                                               headers=event.kafka_headers())
                await asyncio.shield(delivery)
        except (KafkaError, TimeoutError) as exc:
            if delivery is not None and not delivery.done():
                delivery.add_done_callback(_forget)  # aiokafka still delivers it when it can
            raise BusUnavailable(f"Kafka did not acknowledge within {self._timeout} s: {exc!r}",
                                 retry_after=self._retry_after) from exc

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        """A positioned consumer; a topic that does not exist yet is created first (as the
        embedded log does), so that a group can join before the first event."""
        if self._closed:
            raise BusUnavailable("the Kafka bus is closed", retry_after=self._retry_after)
        partitions = {topic: await self._ensure(topic) for topic in topics}
        subscription = await open_subscription(
            self.bootstrap, partitions, group, client_id=self._client_id, join_timeout_s=self._timeout,
            on_close=self._subscriptions.discard)
        self._subscriptions.add(subscription)
        return subscription

    # --- internals ----------------------------------------------------------------------------------

    def _admin(self) -> Any:
        if self._admin_client is None:
            raise RuntimeError("KafkaBus.start() was not called")
        return self._admin_client

    @asynccontextmanager
    async def _admin_call(self, what: str) -> AsyncIterator[None]:
        """Bound an admin operation by the send timeout; report failures as `BusUnavailable`."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BusUnavailable(f"Kafka could not {what}: {exc!r}",
                                 retry_after=self._retry_after) from exc


def _forget(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved
