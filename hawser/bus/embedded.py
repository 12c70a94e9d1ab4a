"""The embedded event bus: a durable append-only log in one SQLite file (WAL mode).

Sends go through the writer loop (hawser/bus/_embedded_writer.py): group commit, one transaction per
batch, each sender resolved only after COMMIT. Durability is `synchronous=FULL`: in WAL mode that syncs
the log on every commit, so an acknowledged event survives a power cut (`NORMAL` is there for disks
that make fsync too dear). Sends never create topics (`UnknownTopic`); nor does `subscribe`, since
topics are created with their application. Consumers wake on commit and read by offset, bounded in
records and bytes, on their own thread; groups are coordinated in-process (_embedded_groups.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from hawser._resources import Startable
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
from hawser.bus._embedded_writer import CLOSED, WriterLoop
from hawser.bus.base import Delivery, Subscription
from hawser.errors import BusUnavailable, UnknownTopic
from hawser.events import CloudEvent

log = logging.getLogger(__name__)
T = TypeVar("T")


class EmbeddedBus(Startable):
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
        fetch_bytes: int = 1024 * 1024,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        release_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._default_partitions = partitions
        self._send_timeout_s = send_timeout_s
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._fetch_size = fetch_size
        self._fetch_bytes = fetch_bytes
        self._synchronous = synchronous
        self._release_timeout_s = release_timeout_s
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
        self._loop: WriterLoop | None = None
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        if self._closed:
            raise BusUnavailable(CLOSED)
        loop = asyncio.get_running_loop()
        try:
            writer = await loop.run_in_executor(
                self._writer_thread, lambda: LogWriter(self.path, synchronous=self._synchronous))
            self._writer = writer
            self._reader = await loop.run_in_executor(self._reader_thread, LogReader, self.path)
        except (sqlite3.Error, OSError) as exc:
            log.error("cannot open the embedded event log %s", self.path, exc_info=exc)
            raise BusUnavailable("the embedded event log cannot be opened") from exc
        self._partitions = dict(writer.partitions)
        self._end = dict(writer.next_offsets)
        self._loop = WriterLoop(
            writer, self._writer_thread, self._apply, default_partitions=self._default_partitions,
            queue_size=self._queue_size, batch_size=self._batch_size, send_timeout_s=self._send_timeout_s)

    async def aclose(self) -> None:
        """End every subscription, commit what is queued, close both connections and threads. Never
        raises a past failure; closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            for subscription in list(self._subscriptions):
                await subscription.aclose()
            if self._loop is not None:
                await self._loop.aclose()
        finally:
            for connection, thread in ((self._writer, self._writer_thread),
                                       (self._reader, self._reader_thread)):
                if connection is not None:
                    try:
                        await loop.run_in_executor(thread, connection.close)
                    except Exception:  # closing goes on; what failed is logged
                        log.exception("closing the embedded event log %s", self.path)
                thread.shutdown(wait=False)

    # --- EventBus ---------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        self._writer_loop()
        if topic not in self._partitions:
            await self._submit(EnsureTopic(topic, self._default_partitions))

    async def delete_topic(self, topic: str) -> None:
        await self._submit(DeleteTopic(topic))

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        """Append durably. A topic that does not exist is `UnknownTopic` (never created here)."""
        await self._submit(Append(topic, key, event, time.time_ns() // 1_000_000))

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        """Subscribe to existing topics only (`UnknownTopic` otherwise): topics come with their
        application, so a group joining before the first event finds its topic there already."""
        self._writer_loop()
        for topic in topics:
            if topic not in self._partitions:
                raise UnknownTopic(f"no topic {topic!r} on the event bus")
        if group is None:
            return self._attach(EmbeddedSubscription(self, topics, None, batch=self._fetch_size))
        async with self._groups_lock:
            members = self._groups.get(group)
            if members is None:
                committed = await self._read(lambda reader: reader.group_offsets(group))
                members = self._groups[group] = Group(
                    group, self, committed, release_timeout_s=self._release_timeout_s)
            members.pinned += 1  # not dropped while we join, even if its last member leaves now
            try:
                # A new group starts at the end as it stands now, committed at once (see base.py).
                fresh = {(topic, p): self.end((topic, p)) for topic in topics
                         for p in range(self.partitions(topic)) if (topic, p) not in members.committed}
                if fresh:
                    await self.commit_offsets(group, fresh)
                    members.committed.update(fresh)
                self._writer_loop()  # the bus may have closed meanwhile
                subscription = self._attach(
                    EmbeddedSubscription(self, topics, members, batch=self._fetch_size))
                members.join(subscription)
            finally:
                members.pinned -= 1
                members.drop_if_idle()
        return subscription

    # --- the `Log` that subscriptions use ---------------------------------------------------------

    def end(self, tp: TP) -> int:
        return self._end.get(tp, 0)

    def partitions(self, topic: str) -> int:
        return self._partitions.get(topic, 0)

    async def fetch(self, wanted: Sequence[tuple[TP, int]]) -> list[Delivery]:
        limit, max_bytes = self._fetch_size, self._fetch_bytes
        return await self._read(lambda reader: reader.fetch(wanted, limit, max_bytes))

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

    def drop_group(self, group: Group) -> None:
        """The group has no member and no commit in flight: forget it (its offsets are on disk and
        are read again when someone joins it next)."""
        if self._groups.get(group.name) is group:
            del self._groups[group.name]

    def _attach(self, subscription: EmbeddedSubscription) -> EmbeddedSubscription:
        self._subscriptions.add(subscription)
        for topic in subscription.topics:
            self._by_topic.setdefault(topic, set()).add(subscription)
        return subscription

    # --- internals --------------------------------------------------------------------------------

    async def _read(self, call: Callable[[LogReader], T]) -> T:
        reader = self._reader
        if reader is None or self._closed:
            raise BusUnavailable(CLOSED)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader_thread, call, reader)
        except sqlite3.Error as exc:
            log.error("embedded event log: a read failed", exc_info=exc)
            raise BusUnavailable("the embedded event log cannot be read") from exc

    def _writer_loop(self) -> WriterLoop:
        if self._loop is None:
            raise RuntimeError("EmbeddedBus.start() was not called")
        if self._closed or not self._loop.alive:
            raise BusUnavailable(CLOSED)
        return self._loop

    async def _submit(self, op: Op) -> None:
        await self._writer_loop().submit(op)

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
                subscription.topic_deleted(topic)
        for op, position in zip(ops, result.positions, strict=True):
            if position is not None and isinstance(op, Append):
                tp = (op.topic, position[0])
                self._end[tp] = max(self._end.get(tp, 0), position[1] + 1)
                touched.add(op.topic)
        for topic in touched:
            for subscription in self._by_topic.get(topic, ()):
                subscription.wake.set()
