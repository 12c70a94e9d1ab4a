"""The SQLite side of the embedded log: schema, batched writes, reads by offset.

Everything here blocks and knows nothing of asyncio. `LogWriter` is used only by the bus's writer
thread and `LogReader` only by its reader thread, each with its own connection (WAL lets the reader
run beside the writer). The writer owns the partition counts and next offsets of every topic.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hawser.bus.base import Delivery
from hawser.events import CloudEvent

#: A topic partition.
TP = tuple[str, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key TEXT,
    attributes TEXT NOT NULL,
    value BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_position ON records (topic, partition, "offset");
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
"""


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for a key: CRC-32 of its UTF-8 bytes, modulo the partition count."""
    return zlib.crc32(key.encode()) % partitions


# --- what the writer is asked to do -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Append:
    topic: str
    key: str
    event: CloudEvent
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class CommitOffsets:
    group: str
    offsets: Mapping[TP, int]


@dataclass(frozen=True, slots=True)
class EnsureTopic:
    topic: str
    partitions: int


@dataclass(frozen=True, slots=True)
class DeleteTopic:
    topic: str


Op = Append | CommitOffsets | EnsureTopic | DeleteTopic


@dataclass(slots=True)
class BatchResult:
    """What one committed batch changed: `positions[i]` is the (partition, offset) of op i when it is
    an `Append`; `topics` holds the partition count of every topic created (or `0` if deleted),
    `deleted` every topic deleted (it may have been created again later in the batch), and `unknown`
    the index of every `Append` refused because its topic did not exist (appends never create one)."""

    positions: list[tuple[int, int] | None]
    topics: dict[str, int]
    deleted: set[str]
    unknown: set[int]


def _connect(path: Path, *, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class LogWriter:
    """The one connection that writes. Every batch is one transaction."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(path, synchronous=synchronous)
        self._conn.executescript(_SCHEMA)
        self.partitions: dict[str, int] = dict(self._conn.execute("SELECT name, partitions FROM topics"))
        self.next_offsets: dict[TP, int] = {(t, p): 0 for t, n in self.partitions.items() for p in range(n)}
        for topic, partition, last in self._conn.execute(
            'SELECT topic, partition, MAX("offset") FROM records GROUP BY topic, partition'
        ):
            self.next_offsets[(topic, partition)] = last + 1

    def close(self) -> None:
        self._conn.close()

    def write(self, ops: Sequence[Op], default_partitions: int) -> BatchResult:
        """Apply `ops` in one transaction; the in-memory state changes only once it committed."""
        offsets: dict[TP, int] = {}
        topics: dict[str, int] = {}
        deleted: set[str] = set()
        unknown: set[int] = set()
        positions: list[tuple[int, int] | None] = []
        rows: list[tuple[str, int, int, str, str, bytes, int]] = []
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, op in enumerate(ops):
                if isinstance(op, Append):
                    count = topics.get(op.topic, self.partitions.get(op.topic, 0))
                    if not count:  # the application was deleted: refuse this record, not the batch
                        unknown.add(index)
                        positions.append(None)
                        continue
                    partition = partition_for(op.key, count)
                    tp = (op.topic, partition)
                    offset = offsets.get(tp, self.next_offsets.get(tp, 0))
                    offsets[tp] = offset + 1
                    rows.append((op.topic, partition, offset, op.key,
                                 json.dumps(dict(op.event.attributes), separators=(",", ":")),
                                 op.event.data, op.timestamp_ms))
                    positions.append((partition, offset))
                    continue
                if rows:  # keep the order of appends relative to the other operations
                    self._insert(rows)
                    rows = []
                positions.append(None)
                if isinstance(op, CommitOffsets):
                    conn.executemany(
                        "INSERT INTO group_offsets (group_id, topic, partition, next_offset)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (group_id, topic, partition)"
                        " DO UPDATE SET next_offset = excluded.next_offset",
                        [(op.group, t, p, o) for (t, p), o in op.offsets.items()],
                    )
                elif isinstance(op, EnsureTopic):
                    if not topics.get(op.topic, self.partitions.get(op.topic, 0)):
                        self._create(op.topic, op.partitions, topics, offsets)
                else:
                    for table, column in (("records", "topic"), ("group_offsets", "topic"),
                                          ("topics", "name")):
                        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (op.topic,))  # noqa: S608
                    topics[op.topic] = 0
                    deleted.add(op.topic)
                    for tp in [tp for tp in offsets if tp[0] == op.topic]:
                        del offsets[tp]
            if rows:
                self._insert(rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._apply(topics, offsets)
        return BatchResult(positions, topics, deleted, unknown)

    def _insert(self, rows: list[tuple[str, int, int, str, str, bytes, int]]) -> None:
        self._conn.executemany(
            'INSERT INTO records (topic, partition, "offset", key, attributes, value, timestamp_ms)'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _create(self, topic: str, partitions: int, topics: dict[str, int],
                offsets: dict[TP, int]) -> int:
        self._conn.execute("INSERT INTO topics (name, partitions) VALUES (?, ?)", (topic, partitions))
        topics[topic] = partitions
        offsets.update(((topic, p), 0) for p in range(partitions))
        return partitions

    def _apply(self, topics: Mapping[str, int], offsets: Mapping[TP, int]) -> None:
        for topic, count in topics.items():
            for tp in [tp for tp in self.next_offsets if tp[0] == topic]:
                del self.next_offsets[tp]
            if count:
                self.partitions[topic] = count
                self.next_offsets.update(((topic, p), 0) for p in range(count))
            else:
                self.partitions.pop(topic, None)
        self.next_offsets.update(offsets)


class LogReader:
    """A read-only connection: records by offset, committed group offsets."""

    def __init__(self, path: Path) -> None:
        self._conn = _connect(path, synchronous="NORMAL")
        self._conn.execute("PRAGMA query_only=ON")

    def close(self) -> None:
        self._conn.close()

    def fetch(self, wanted: Iterable[tuple[TP, int]], limit: int, max_bytes: int) -> list[Delivery]:
        """Up to `limit` records from each partition, starting at the given offsets, in order, and
        in all no more than about `max_bytes` of data (at least one record, however large). The
        cursor yields rows one at a time, so the rows past the budget are never read."""
        out: list[Delivery] = []
        budget = max_bytes
        for (topic, partition), start in wanted:
            if budget <= 0:
                break
            for offset, key, attributes, value, timestamp_ms in self._conn.execute(
                'SELECT "offset", key, attributes, value, timestamp_ms FROM records'
                ' WHERE topic = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
                (topic, partition, start, limit),
            ):
                event = CloudEvent(json.loads(attributes), value)
                out.append(Delivery(topic, partition, offset, key, event, timestamp_ms))
                budget -= len(value) + len(attributes)
                if budget <= 0:
                    break
        return out

    def group_offsets(self, group: str) -> dict[TP, int]:
        return {
            (topic, partition): offset
            for topic, partition, offset in self._conn.execute(
                "SELECT topic, partition, next_offset FROM group_offsets WHERE group_id = ?", (group,)
            )
        }
