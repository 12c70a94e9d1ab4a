"""The embedded event bus: a durable append-only log in one SQLite file (WAL mode).

`send` puts the record on a bounded queue; one writer task drains everything waiting (up to
`batch_size`) into ONE transaction on a dedicated writer thread, and resolves each sender only after
COMMIT returned. Durability is `synchronous=FULL`: in WAL mode that syncs the log on every commit, so
an acknowledged event survives a power cut, not only a crash of the process. An acknowledgement is
a promise to a device that may discard its copy, so we pay one fsync per batch; group commit spreads it
over every sender waiting at that moment (`NORMAL` is available for disks that make fsync too dear).
Consumers wake on commit and read by offset on their own thread; groups are coordinated in-process.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self, TypeVar

from hawser.bus._embedded_groups import EmbeddedSubscription, Group
from hawser.bus._embedded_store import (
    TP,
    Append,
    BatchResult,
    CommitOffsets,
    DeleteTopic,
    EnsureTopic,
    LogReader,
    LogWriter,
    Op,
)
from hawser.bus.base import Delivery, Subscription
from hawser.errors import BusUnavailable
from hawser.events import CloudEvent

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Pending:
    op: Op
    future: asyncio.Future[None]


class EmbeddedBus:
    """The single-machine `EventBus`: survives restarts, keeps consumer-group offsets."""

    def __init__(
        self,
        path: Path,
        partitions: int = 3,
        *,
        send_timeout_s: float = 10.0,
        queue_size: int = 10_000,
        batch_size: int = 1_000,
        fetch_size: int = 500,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        release_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._default_partitions = partitions
        self._send_timeout_s = send_timeout_s
        self._batch_size = batch_size
        self._fetch_size = fetch_size
        self._synchronous = synchronous
        self._release_timeout_s = release_timeout_s
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=queue_size)
        self._partitions: dict[str, int] = {}
        self._end: dict[TP, int] = {}
        self._subscriptions: set[EmbeddedSubscription] = set()
        self._by_topic: dict[str, set[EmbeddedSubscription]] = {}
        self._groups: dict[str, Group] = {}
        self._groups_lock = asyncio.Lock()
        self._writer: LogWriter | None = None
        self._reader: LogReader | None = None
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="hawser-log-writer")
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="hawser-log-reader")
        self._writer_task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer_task is not None:
            return
        if self._closed:
            raise BusUnavailable("the embedded log is closed")
        loop = asyncio.get_running_loop()
        try:
            writer = await loop.run_in_executor(
                self._writer_thread, lambda: LogWriter(self.path, synchronous=self._synchronous))
            self._writer = writer
            self._reader = await loop.run_in_executor(self._reader_thread, LogReader, self.path)
        except (sqlite3.Error, OSError) as exc:
            raise BusUnavailable(f"cannot open the embedded log {self.path}: {exc}") from exc
        self._partitions = dict(writer.partitions)
        self._end = dict(writer.next_offsets)
        self._writer_task = asyncio.create_task(self._run_writer(), name="hawser-log-writer")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        task = self._writer_task
        if task is not None:
            if not task.done():
                await self._queue.put(None)  # the writer commits what is queued, then stops
            await task
            while not self._queue.empty():  # senders that were still waiting for room in the queue
                item = self._queue.get_nowait()
                if item is not None and not item.future.done():
                    item.future.set_exception(BusUnavailable("the embedded log is closed"))
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            await loop.run_in_executor(self._writer_thread, self._writer.close)
        if self._reader is not None:
            await loop.run_in_executor(self._reader_thread, self._reader.close)
        self._writer_thread.shutdown(wait=False)
        self._reader_thread.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- EventBus ---------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        self._check_open()
        if topic not in self._partitions:
            await self._submit(EnsureTopic(topic, self._default_partitions))

    async def delete_topic(self, topic: str) -> None:
        await self._submit(DeleteTopic(topic))

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        await self._submit(Append(topic, key, event, time.time_ns() // 1_000_000))

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        for topic in topics:
            await self.ensure_topic(topic)
        if group is None:
            subscription = EmbeddedSubscription(self, topics, None, batch=self._fetch_size)
            self._attach(subscription)
            return subscription
        async with self._groups_lock:
            members = self._groups.get(group)
            if members is None:
                committed = await self._read(lambda reader: reader.group_offsets(group))
                members = self._groups[group] = Group(
                    group, self, committed, release_timeout_s=self._release_timeout_s)
            # A new group starts at the end as it stands now, committed at once (see base.py).
            fresh = {(topic, p): self.end((topic, p)) for topic in topics
                     for p in range(self.partitions(topic)) if (topic, p) not in members.committed}
            if fresh:
                await self.commit_offsets(group, fresh)
                members.committed.update(fresh)
            subscription = EmbeddedSubscription(self, topics, members, batch=self._fetch_size)
            self._attach(subscription)
            members.join(subscription)
        return subscription

    # --- the `Log` that subscriptions use ---------------------------------------------------------

    def end(self, tp: TP) -> int:
        return self._end.get(tp, 0)

    def partitions(self, topic: str) -> int:
        return self._partitions.get(topic, 0)

    async def fetch(self, wanted: Sequence[tuple[TP, int]]) -> list[Delivery]:
        limit = self._fetch_size
        return await self._read(lambda reader: reader.fetch(wanted, limit))

    async def commit_offsets(self, group: str, offsets: Mapping[TP, int]) -> None:
        await self._submit(CommitOffsets(group, dict(offsets)))

    def detach(self, subscription: EmbeddedSubscription) -> None:
        self._subscriptions.discard(subscription)
        for topic in subscription.topics:
            readers = self._by_topic.get(topic)
            if readers is not None:
                readers.discard(subscription)
                if not readers:
                    del self._by_topic[topic]

    def _attach(self, subscription: EmbeddedSubscription) -> None:
        self._subscriptions.add(subscription)
        for topic in subscription.topics:
            self._by_topic.setdefault(topic, set()).add(subscription)

    # --- internals --------------------------------------------------------------------------------

    async def _read(self, call: Callable[[LogReader], T]) -> T:
        reader = self._reader
        if reader is None or self._closed:
            raise BusUnavailable("the embedded log is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader_thread, call, reader)
        except sqlite3.Error as exc:
            raise BusUnavailable(f"embedded log read failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._writer_task is None:
            raise RuntimeError("EmbeddedBus.start() was not called")
        if self._closed:
            raise BusUnavailable("the embedded log is closed")
        if self._failure is not None:
            raise BusUnavailable(f"the embedded log writer failed: {self._failure!r}")

    async def _submit(self, op: Op) -> None:
        self._check_open()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await self._queue.put(_Pending(op, future))
                await future
        except TimeoutError:
            future.cancel()  # the writer skips it if it has not started its batch yet
            raise BusUnavailable(
                f"the embedded log did not acknowledge within {self._send_timeout_s} s") from None

    async def _run_writer(self) -> None:
        queue = self._queue
        batch: list[_Pending] = []
        try:
            while True:
                first = await queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self._batch_size and not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                batch = [item for item in batch if not item.future.done()]
                if batch:
                    await self._write(batch)
                batch = []
                if stop:
                    return
        except BaseException as exc:
            # Nobody may wait forever on a dead writer: fail what it holds and what is queued.
            self._failure = exc
            log.exception("embedded log writer failed")
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    batch.append(item)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BusUnavailable("the embedded log writer failed"))
            raise

    async def _write(self, batch: list[_Pending]) -> None:
        writer = self._writer
        assert writer is not None
        ops = [item.op for item in batch]
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._writer_thread, writer.write, ops, self._default_partitions)
        except (sqlite3.Error, OSError) as exc:
            log.error("embedded log write of %d records failed: %s", len(ops), exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BusUnavailable(f"embedded log write failed: {exc}"))
            return
        self._apply(ops, result)
        for item in batch:
            if not item.future.done():
                item.future.set_result(None)

    def _apply(self, ops: Sequence[Op], result: BatchResult) -> None:
        """Mirror a committed batch in memory, then wake the consumers of every topic it touched."""
        touched = set(result.topics)
        for topic, count in result.topics.items():
            for tp in [tp for tp in self._end if tp[0] == topic]:
                del self._end[tp]
            if count:
                self._partitions[topic] = count
                self._end.update(((topic, p), 0) for p in range(count))
            else:
                self._partitions.pop(topic, None)
        for topic in result.deleted:
            for members in self._groups.values():
                members.forget_topic(topic)
            for subscription in self._by_topic.get(topic, ()):
                subscription.topic_reset(topic)
        for op, position in zip(ops, result.positions, strict=True):
            if position is not None and isinstance(op, Append):
                tp = (op.topic, position[0])
                self._end[tp] = max(self._end.get(tp, 0), position[1] + 1)
                touched.add(op.topic)
        for topic in touched:
            for subscription in self._by_topic.get(topic, ()):
                subscription.wake.set()

