"""What only the embedded log promises beyond the contract: it survives a restart of the process, takes
many concurrent senders with batched commits, and fails loudly instead of hanging."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from hawser.bus._embedded_groups import EmbeddedSubscription
from hawser.bus._embedded_store import Append, BatchResult, LogWriter, Op, partition_for
from hawser.bus.embedded import EmbeddedBus
from hawser.errors import BusUnavailable
from tests.bus.test_contract import KEYS, event, send_all, take
from tests.helpers import eventually

TOPIC = "events-app"


async def test_events_and_group_offsets_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events = [event(n) for n in range(24)]
    async with EmbeddedBus(path) as bus:
        await bus.ensure_topic(TOPIC)
        async with await bus.subscribe([TOPIC], "g") as subscription:
            await send_all(bus, TOPIC, events)
            consumed = await take(subscription, 10)
            for delivery in consumed:
                await subscription.commit(delivery)
    async with EmbeddedBus(path) as bus:
        assert bus.partitions(TOPIC) == 3
        more = [event(n) for n in range(6)]
        async with await bus.subscribe([TOPIC], "g") as subscription:
            await send_all(bus, TOPIC, more)
            rest = await take(subscription, len(events) - len(consumed) + len(more))
        ids = Counter(d.event.id for d in consumed + rest)
        assert ids == Counter(e.id for e in events + more)  # resumed without loss or repeat
        by_partition: dict[int, list[int]] = {}
        for delivery in consumed + rest:
            by_partition.setdefault(delivery.partition, []).append(delivery.offset)
        for offsets in by_partition.values():  # offsets continue after the restart, no reuse
            assert offsets == list(range(len(offsets)))
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute("SELECT COUNT(*) FROM records").fetchone()
    assert stored == len(events) + len(more)


async def test_a_new_group_commits_its_start_before_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with EmbeddedBus(path) as bus:
        await bus.ensure_topic(TOPIC)
        await send_all(bus, TOPIC, [event(n) for n in range(6)])
        await (await bus.subscribe([TOPIC], "g")).aclose()
        pending = [event(n) for n in range(6)]
        await send_all(bus, TOPIC, pending)
    async with EmbeddedBus(path) as bus, await bus.subscribe([TOPIC], "g") as subscription:
        got = await take(subscription, len(pending))
    assert sorted(d.event.id for d in got) == sorted(e.id for e in pending)


async def test_concurrent_senders_are_all_acknowledged_and_readable(tmp_path: Path) -> None:
    senders, per_sender = 50, 40
    async with EmbeddedBus(tmp_path / "events.db") as bus:
        await bus.ensure_topic(TOPIC)
        async with await bus.subscribe([TOPIC]) as subscription:
            sent: list[str] = []

            async def sender(index: int) -> None:
                for n in range(per_sender):
                    item = event(index * per_sender + n)
                    await bus.send(TOPIC, item, KEYS[index % len(KEYS)])
                    sent.append(item.id)

            started = time.perf_counter()
            await asyncio.gather(*(sender(i) for i in range(senders)))
            elapsed = time.perf_counter() - started
            got = await take(subscription, senders * per_sender)
    assert len(sent) == senders * per_sender
    assert Counter(d.event.id for d in got) == Counter(sent)
    print(f"embedded log: {len(sent) / elapsed:.0f} acknowledged sends/s from {senders} tasks")


async def test_a_partition_moves_only_after_its_holder_stopped_reading(tmp_path: Path) -> None:
    key = next(k for k in KEYS if partition_for(k, 2) == 1)  # partition 1 is the one that moves
    async with EmbeddedBus(tmp_path / "events.db", partitions=2) as bus:
        await bus.ensure_topic(TOPIC)
        first = await bus.subscribe([TOPIC], "g")
        events = [event(n) for n in range(4)]
        for item in events:
            await bus.send(TOPIC, item, key)
        (delivery,) = await take(first, 1)
        second = await bus.subscribe([TOPIC], "g")  # partition 1 is to move to it...
        assert isinstance(first, EmbeddedSubscription)
        assert isinstance(second, EmbeddedSubscription)
        assert first.releasing == {(TOPIC, 1)}
        assert second.owned == set()  # ...but not while `first` may still be reading it
        await first.commit(delivery)  # still the holder: its commit counts
        reader = asyncio.create_task(take(second, 3, timeout=10))
        stepping = asyncio.create_task(anext(first))  # its next step lets go of the partition
        got = await reader
        assert second.owned == {(TOPIC, 1)}
        assert not stepping.done()  # `first` keeps partition 0, which is empty
        stepping.cancel()
        await first.aclose()
        await second.aclose()
    assert [d.event.id for d in got] == [e.id for e in events[1:]]


async def test_a_holder_that_stops_stepping_loses_its_partition_after_the_timeout(tmp_path: Path) -> None:
    key = next(k for k in KEYS if partition_for(k, 2) == 1)
    async with EmbeddedBus(tmp_path / "events.db", partitions=2, release_timeout_s=0.2) as bus:
        await bus.ensure_topic(TOPIC)
        stuck = await bus.subscribe([TOPIC], "g")
        events = [event(n) for n in range(3)]
        for item in events:
            await bus.send(TOPIC, item, key)
        (first,) = await take(stuck, 1)  # ...and never asks for the next one
        async with await bus.subscribe([TOPIC], "g") as second:
            got = await take(second, 3, timeout=10)  # redelivered: `stuck` never committed
        await stuck.commit(first)  # too late: it no longer holds the partition, nothing changes
        await stuck.aclose()
    assert [d.event.id for d in got] == [e.id for e in events]


async def test_send_on_a_closed_bus_is_refused(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "events.db")
    await bus.start()
    await bus.aclose()
    await bus.aclose()  # idempotent
    with pytest.raises(BusUnavailable):
        await bus.send(TOPIC, event(0), "k")


async def test_an_unusable_file_is_reported_as_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    bus = EmbeddedBus(tmp_path / "dir.db")
    with pytest.raises(BusUnavailable):
        await bus.start()
    await bus.aclose()


async def test_a_failing_batch_fails_only_its_senders_and_close_releases_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = LogWriter.write

    def refuse_poison(self: LogWriter, ops: Sequence[Op], partitions: int) -> BatchResult:
        if any(isinstance(op, Append) and op.key == "poison" for op in ops):
            raise ValueError("a bug in one batch")
        return real(self, ops, partitions)

    monkeypatch.setattr(LogWriter, "write", refuse_poison)  # fault injection into our own writer
    bus = EmbeddedBus(tmp_path / "events.db")
    await bus.start()
    await bus.ensure_topic(TOPIC)
    with pytest.raises(BusUnavailable) as caught:
        await bus.send(TOPIC, event(0), "poison")
    assert "a bug" not in caught.value.detail
    await bus.send(TOPIC, event(1), "good")  # the writer lives on
    await bus.aclose()  # does not raise the old error
    await eventually(lambda: not [t for t in threading.enumerate() if t.name.startswith("hawser-log")],
                     message="the log's threads to end")


async def test_senders_waiting_for_room_fail_fast_when_the_log_closes(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "events.db", queue_size=1, send_timeout_s=30.0)
    await bus.start()
    await bus.ensure_topic(TOPIC)
    sends = [asyncio.create_task(bus.send(TOPIC, event(n), KEYS[0])) for n in range(50)]
    await asyncio.sleep(0)  # they queue (one fits) or wait for room
    started = time.monotonic()
    await bus.aclose()
    outcomes = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
    assert time.monotonic() - started < 5
    assert all(o is None or isinstance(o, BusUnavailable) for o in outcomes), outcomes
    assert any(isinstance(o, BusUnavailable) for o in outcomes)


async def test_a_group_without_members_is_forgotten_and_resumes_from_disk(tmp_path: Path) -> None:
    async with EmbeddedBus(tmp_path / "events.db") as bus:
        await bus.ensure_topic(TOPIC)
        for n in range(200):
            await (await bus.subscribe([TOPIC], f"websocket:{n}")).aclose()
        assert bus._groups == {}
        async with await bus.subscribe([TOPIC], "g") as subscription:
            await send_all(bus, TOPIC, [event(n) for n in range(3)])
            for delivery in await take(subscription, 3):
                await subscription.commit(delivery)
        assert bus._groups == {}
        later = [event(n) for n in range(3)]
        await send_all(bus, TOPIC, later)
        async with await bus.subscribe([TOPIC], "g") as subscription:
            got = await take(subscription, 3)
    assert sorted(d.event.id for d in got) == sorted(e.id for e in later)


async def test_subscribing_while_the_log_closes_is_refused(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "events.db")
    await bus.start()
    await bus.ensure_topic(TOPIC)
    joining = asyncio.create_task(bus.subscribe([TOPIC], "g"))  # awaits its first commit
    await asyncio.sleep(0)
    await bus.aclose()
    with pytest.raises(BusUnavailable):
        await joining
    assert not bus._subscriptions
