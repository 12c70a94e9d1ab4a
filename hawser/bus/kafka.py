"""The Kafka `EventBus`: one idempotent aiokafka producer, an admin client for topics, one consumer per
subscription (see hawser/bus/_kafka_consumer.py).

CloudEvents travel in binary content mode (`ce_` headers, `content-type`, data as the value, the key as
UTF-8). With idempotence on, aiokafka never expires a batch but retries it until the broker takes it, so
a send waits for its acknowledgement only up to `send_timeout_s` and then reports `BusUnavailable`; the
record may still land once the broker is back (at least once), and the producer recovers by itself.

Topics are created only by `ensure_topic` (with their application). Production brokers must run with
`auto.create.topics.enable=false` (as scripts/services.py does): otherwise a send or a consumer of a
deleted application's topic silently creates it again. A send or subscribe to a topic the broker does
not have is `UnknownTopic`; `BusUnavailable` means the broker could not be asked. Neither tells a
client anything of the internals: the cause is chained and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code

from hawser._resources import Startable
from hawser.bus._kafka_batches import BATCH_OVERHEAD, Batcher
from hawser.bus._kafka_consumer import UNAVAILABLE, KafkaSubscription, open_subscription
from hawser.bus._kafka_send import Deadlines, KeyPartitioner
from hawser.bus.base import Subscription
from hawser.errors import BusUnavailable, UnknownTopic
from hawser.events import CloudEvent

log = logging.getLogger(__name__)

_NO_ERROR, _UNKNOWN_TOPIC, _TOPIC_EXISTS = 0, 3, 36
_POLL_S = 0.05
#: The largest record batch sent: aiokafka's default `max_request_size`, under the broker's default
#: `message.max.bytes` (1 MiB + 12). Larger batches (`max_batch_bytes`) need a broker allowing them.
MAX_REQUEST_BYTES = 1024 * 1024


class KafkaBus(Startable):
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
        max_batch_bytes: int = 256 * 1024,
    ) -> None:
        self.bootstrap = bootstrap
        self._partitions = partitions
        self._replication_factor = replication_factor
        self._linger_ms = linger_ms
        self._max_batch_bytes = max_batch_bytes
        self._timeout = send_timeout_s
        self._client_id = client_id
        self._retry_after = max(1, round(send_timeout_s))
        self._producer: Any = None
        self._admin_client: Any = None
        self._known: dict[str, int] = {}  # topic -> partitions, of topics seen to exist
        self._deadlines = Deadlines()
        self._routes: dict[str, list[int]] = {}  # topic -> its partitions, for the partitioner
        self._batcher: Batcher = None  # type: ignore[assignment]  # made with the producer, in start()
        self._subscriptions: set[KafkaSubscription] = set()
        #: topic -> whether the broker no longer has it, while one failed send asks for all of them.
        self._gone_checks: dict[str, asyncio.Future[bool]] = {}
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
            # aiokafka keeps one batch per partition in flight; its default of 16 KiB holds about 27 of
            # Hawser's records, so under load every send parks on a full batch. 256 KiB measured 1.8x
            # the throughput at half the CPU per message (docs/performance.md).
            max_batch_size=self._max_batch_bytes,
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
            log.error("cannot reach Kafka at %s", self.bootstrap, exc_info=exc)
            raise BusUnavailable(UNAVAILABLE, retry_after=self._retry_after) from exc
        self._producer, self._admin_client = producer, admin
        self._batcher = Batcher(producer, linger_s=self._linger_ms / 1000, partitioner=KeyPartitioner(),
                                give_up_s=self._timeout,
                                max_record_bytes=max(MAX_REQUEST_BYTES, self._max_batch_bytes + BATCH_OVERHEAD))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        producer, admin = self._producer, self._admin_client
        if producer is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._batcher.aclose()
                    await producer.flush()
            except TimeoutError:
                # The broker is away and idempotent batches never expire, so `stop()` would wait
                # forever: stop the sender first (their senders were told BusUnavailable already).
                # aiokafka has no public way to give up, hence its private sender and accumulator.
                log.warning("closing the Kafka producer with records still unacknowledged")
                gone = KafkaConnectionError("closed while Kafka was away")
                self._batcher.abort(gone)
                await producer._sender.close()
                producer._message_accumulator.fail_all(gone)
            await producer.stop()
        self._deadlines.close()
        if admin is not None:
            await admin.close()

    # --- topics -------------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        await self._ensure(topic, cached=False)  # another instance may have deleted it meanwhile

    async def _describe(self, topic: str) -> int:
        """The partition count of an existing topic; `UnknownTopic` if the broker has none."""
        if topic in self._known:
            return self._known[topic]
        async with self._admin_call(f"describe topic {topic}"):
            (described,) = await self._admin().describe_topics([topic])
        if described["error_code"] == _UNKNOWN_TOPIC:
            raise UnknownTopic(f"no topic {topic!r} on the event bus")
        if described["error_code"] != _NO_ERROR or not described["partitions"]:
            log.warning("Kafka describes topic %s with error %s", topic, described["error_code"])
            raise BusUnavailable(UNAVAILABLE, retry_after=self._retry_after)
        self._known[topic] = len(described["partitions"])
        return self._known[topic]

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
        """Delete the topic and end this process's subscriptions on it (other instances' consumers
        are not told; the WebSocket integration also checks each event's application uid)."""
        self._known.pop(topic, None)
        self._routes.pop(topic, None)
        for subscription in list(self._subscriptions):
            if topic in subscription.topics:
                subscription.topic_deleted(topic)
        async with self._admin_call(f"delete topic {topic}"):
            response = await self._admin().delete_topics([topic])
            for _name, code in response.topic_error_codes:
                if code not in (_NO_ERROR, _UNKNOWN_TOPIC):
                    raise for_code(code)()
            if self._producer is not None:  # records not handed to aiokafka yet will not be written
                self._batcher.forget(topic, UnknownTopic(f"no topic {topic!r} on the event bus"))
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
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        appended = False
        try:
            partitions = self._routes.get(topic)
            if partitions is None:
                async with asyncio.timeout_at(deadline):
                    count = await self._describe(topic)  # a send must never create a topic
                partitions = self._routes[topic] = list(range(count))
            # Appended to this partition's open batch; settles with the batch's acknowledgement. A
            # caller that gives up (deadline, or gone) only stops waiting: the record is still
            # delivered when Kafka can, unless its batch was still waiting to be handed over when
            # every sender in it had given up (hawser/bus/_kafka_batches.py).
            delivery = self._batcher.append(topic, partitions, key.encode(), event.data, event.kafka_headers())
            appended = True
            self._deadlines.add(deadline, delivery)
            await delivery
        except Exception as exc:  # KafkaError, TimeoutError, aiokafka refusing a vanished partition
            self._routes.pop(topic, None)
            if appended and producer.client.cluster.partitions_for_topic(topic) is None:
                # The topic was there when the record was appended, and the producer's metadata
                # (refreshed on the error) lost it since: deleted elsewhere? The records of a deleted
                # topic fail in waves (deadlines, batches given up, batches refused), each asks.
                await self._raise_if_gone(topic, exc)
            if isinstance(exc, UnknownTopic | BusUnavailable):
                raise
            log.warning("Kafka did not acknowledge a record for %s within %s s", topic, self._timeout,
                        exc_info=exc)
            raise BusUnavailable(UNAVAILABLE, retry_after=self._retry_after) from exc

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        """A positioned consumer of existing topics (`UnknownTopic` otherwise): topics come with
        their application, so a group joining before the first event finds its topic there."""
        self._check_open()
        partitions = {}
        for topic in topics:
            self._known.pop(topic, None)  # another instance may have deleted it
            self._routes.pop(topic, None)
            partitions[topic] = await self._describe(topic)
        subscription = await open_subscription(
            self.bootstrap, partitions, group, client_id=self._client_id, join_timeout_s=self._timeout,
            on_close=self._subscriptions.discard)
        if self._closed:  # the bus closed while the consumer joined: it would never be closed
            await subscription.aclose()
            self._check_open()
        self._subscriptions.add(subscription)
        return subscription

    # --- internals ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusUnavailable("the event bus is closed", retry_after=self._retry_after)

    async def _raise_if_gone(self, topic: str, cause: BaseException) -> None:
        """`UnknownTopic` if the broker answers (within a second) that it has no `topic`. The records
        of a batch fail together: one question answers all their senders."""
        check = self._gone_checks.get(topic)
        if check is not None:
            gone = await asyncio.shield(check)
        else:
            check = self._gone_checks[topic] = asyncio.get_running_loop().create_future()
            gone = False
            try:
                gone = await self._is_gone(topic)
            finally:  # even if this sender is cancelled: the others wait for the answer
                del self._gone_checks[topic]
                check.set_result(gone)
        if gone:
            raise UnknownTopic(f"no topic {topic!r} on the event bus") from cause

    async def _is_gone(self, topic: str) -> bool:
        self._known.pop(topic, None)
        self._routes.pop(topic, None)
        try:
            async with asyncio.timeout(1.0):
                await self._describe(topic)
        except UnknownTopic as gone:
            if self._producer is not None:  # what is still waiting to be handed over fails now
                self._batcher.forget(topic, gone)
            return True
        except (BusUnavailable, TimeoutError):
            pass
        return False

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
            log.warning("Kafka could not %s", what, exc_info=exc)
            raise BusUnavailable(UNAVAILABLE, retry_after=self._retry_after) from exc
