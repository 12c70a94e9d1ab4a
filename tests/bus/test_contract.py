"""The `EventBus` contract (hawser/bus/base.py), run against every backend: the embedded log and Kafka.

Each test uses a fresh topic. Reads wait with a deadline; "nothing else arrived" is checked by reading
exactly as many deliveries as expected, so a stray or repeated event would take the place of one we want.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence

import pytest

from hawser.bus.base import Delivery, EventBus, Subscription
from hawser.errors import UnknownTopic
from hawser.events import CloudEvent, EventOrigin, new_event
from tests.bus.conftest import Probe

KEYS = [f"app/device-{i}" for i in range(12)]


def event(n: int, *, data: bytes | None = None) -> CloudEvent:
    origin = EventOrigin("app", "app-uid", f"device-{n % 12}", "dev-uid", "gw", "gw-uid")
    return new_event(origin, channel="telemetry", data=data if data is not None else b'{"n": %d}' % n,
                     instance="test", content_type="application/json")


async def take(subscription: Subscription, count: int, *, timeout: float = 20.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        async for delivery in subscription:
            got.append(delivery)
            if len(got) == count:
                break
    return got


async def send_all(bus: EventBus, topic: str, events: Sequence[CloudEvent]) -> None:
    for n, item in enumerate(events):
        await bus.send(topic, item, KEYS[n % len(KEYS)])


async def test_send_and_receive_keeps_headers_attributes_and_data(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    async with await bus.subscribe([topic]) as subscription:
        origin = EventOrigin("my app", "a-uid", "dev/1 ü", "d-uid", "gw 1", "g-uid", {"custom": "x"})
        sent = new_event(origin, channel="temp/room 1", data=bytes(range(256)), instance="i-1",
                         content_type="application/octet-stream", data_schema="urn:schema:1")
        await bus.send(topic, sent, "my%20app/dev%2F1")
        (got,) = await take(subscription, 1)
    assert got.event == sent
    assert dict(got.event.attributes) == dict(sent.attributes)
    assert got.key == "my%20app/dev%2F1"
    assert got.topic == topic
    assert got.offset >= 0
    assert got.timestamp_ms > 0


async def test_events_of_one_key_keep_their_order(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    events = [event(n) for n in range(60)]
    async with await bus.subscribe([topic]) as subscription:
        await send_all(bus, topic, events)
        got = await take(subscription, len(events))
    for key in KEYS:
        expected = [e.id for n, e in enumerate(events) if KEYS[n % len(KEYS)] == key]
        received = [d.event.id for d in got if d.key == key]
        assert received == expected, key
        assert len({d.partition for d in got if d.key == key}) == 1


async def test_without_group_only_events_sent_after_subscribe(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    await send_all(bus, topic, [event(n) for n in range(12)])
    async with await bus.subscribe([topic]) as subscription:
        after = [event(n) for n in range(12)]
        await send_all(bus, topic, after)
        got = await take(subscription, len(after))
    assert sorted(d.event.id for d in got) == sorted(e.id for e in after)


async def test_two_subscribers_without_group_each_see_everything(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    async with await bus.subscribe([topic]) as one, await bus.subscribe([topic]) as two:
        events = [event(n) for n in range(24)]
        await send_all(bus, topic, events)
        first, second = await asyncio.gather(take(one, 24), take(two, 24))
    assert sorted(d.event.id for d in first) == sorted(e.id for e in events)
    assert sorted(d.event.id for d in second) == sorted(e.id for e in events)


async def _collect_group(members: Sequence[Subscription], expected: set[str]) -> list[list[Delivery]]:
    """Read from every member at once until all expected ids arrived; commit as we go."""
    received: list[list[Delivery]] = [[] for _ in members]
    seen: set[str] = set()
    done = asyncio.Event()

    async def pump(index: int, member: Subscription) -> None:
        async for delivery in member:
            received[index].append(delivery)
            seen.add(delivery.event.id)
            await member.commit(delivery)
            if expected <= seen:
                done.set()

    tasks = [asyncio.create_task(pump(i, m)) for i, m in enumerate(members)]
    try:
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return received


async def test_members_of_a_group_split_the_events(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    async with await bus.subscribe([topic], group) as one, await bus.subscribe([topic], group) as two:
        events = [event(n) for n in range(60)]
        await send_all(bus, topic, events)
        first, second = await _collect_group([one, two], {e.id for e in events})
    ids = [d.event.id for d in first + second]
    assert Counter(ids) == Counter(e.id for e in events)  # no loss, no duplicate
    assert first, "both members got work"
    assert second, "both members got work"
    assert not {d.partition for d in first} & {d.partition for d in second}


async def test_a_group_resumes_after_its_last_commit(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    before = [event(n) for n in range(12)]
    async with await bus.subscribe([topic], group) as subscription:
        await send_all(bus, topic, before)
        for delivery in await take(subscription, len(before)):
            await subscription.commit(delivery)
    while_away = [event(n) for n in range(12)]
    await send_all(bus, topic, while_away)
    async with await bus.subscribe([topic], group) as subscription:
        later = [event(n) for n in range(6)]
        await send_all(bus, topic, later)
        got = await take(subscription, len(while_away) + len(later))
    assert Counter(d.event.id for d in got) == Counter(e.id for e in while_away + later)


async def test_a_new_group_starts_at_the_end_and_keeps_that_position(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    await send_all(bus, topic, [event(n) for n in range(6)])
    subscription = await bus.subscribe([topic], group)
    await subscription.aclose()  # joined once, never read nor committed
    after_join = [event(n) for n in range(6)]
    await send_all(bus, topic, after_join)
    async with await bus.subscribe([topic], group) as subscription:
        got = await take(subscription, len(after_join))
    assert sorted(d.event.id for d in got) == sorted(e.id for e in after_join)


async def test_a_leaving_member_hands_its_partitions_over(bus: EventBus, topic: str) -> None:
    await bus.ensure_topic(topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    async with await bus.subscribe([topic], group) as stays:
        leaves = await bus.subscribe([topic], group)
        await leaves.aclose()
        events = [event(n) for n in range(24)]
        await send_all(bus, topic, events)
        (got,) = await _collect_group([stays], {e.id for e in events})
    assert Counter(d.event.id for d in got) == Counter(e.id for e in events)


async def test_delete_topic_removes_its_events(bus: EventBus, topic: str, probe: Probe) -> None:
    await bus.ensure_topic(topic)
    await send_all(bus, topic, [event(n) for n in range(5)])
    assert await probe(topic) == 5
    await bus.delete_topic(topic)
    assert await probe(topic) is None
    await bus.delete_topic(topic)  # deleting what is gone is fine
    await bus.delete_topic(f"never-{topic}")


async def test_sends_and_subscribes_never_create_topics(bus: EventBus, topic: str, probe: Probe) -> None:
    with pytest.raises(UnknownTopic):
        await bus.send(topic, event(0), KEYS[0])
    with pytest.raises(UnknownTopic):
        await bus.subscribe([topic], "g")
    with pytest.raises(UnknownTopic):
        await bus.subscribe([topic])
    assert await probe(topic) is None
    await bus.ensure_topic(topic)
    # One record to a missing topic fails alone, not the records sent beside it.
    outcomes = await asyncio.gather(bus.send(topic, event(1), KEYS[1]),
                                    bus.send(f"gone-{topic}", event(2), KEYS[2]),
                                    bus.send(topic, event(3), KEYS[3]), return_exceptions=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], UnknownTopic)
    assert outcomes[2] is None
    assert await probe(topic) == 2


@pytest.mark.parametrize("group", [None, "g"])
async def test_deleting_a_topic_ends_its_subscriptions(bus: EventBus, topic: str, group: str | None) -> None:
    await bus.ensure_topic(topic)
    subscription = await bus.subscribe([topic], group)
    try:
        await send_all(bus, topic, [event(0)])
        await take(subscription, 1)
        reader = asyncio.create_task(take(subscription, 1))
        await bus.delete_topic(topic)
        await bus.ensure_topic(topic)  # a new application of the same name
        await send_all(bus, topic, [event(1)])
        with pytest.raises(UnknownTopic):  # ends instead of reading the new topic from its start
            await asyncio.wait_for(reader, 20)
    finally:
        await subscription.aclose()


async def test_members_joining_and_leaving_mid_stream_get_every_event_exactly_once(
        bus: EventBus, topic: str) -> None:
    """Each member commits what it takes before taking more; members come and go while events flow."""
    await bus.ensure_topic(topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    events = [event(n) for n in range(90)]
    received: list[str] = []
    first = await bus.subscribe([topic], group)

    async def consume(member: Subscription, stop: asyncio.Event) -> None:
        async with member:
            iterator = aiter(member)
            while not stop.is_set():
                step = asyncio.ensure_future(anext(iterator))
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait({step, halt}, return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                if not step.done():
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    return
                delivery = step.result()
                received.append(delivery.event.id)
                await member.commit(delivery)

    stops = [asyncio.Event() for _ in range(3)]
    tasks = [asyncio.create_task(consume(first, stops[0]))]
    try:
        await send_all(bus, topic, events[:30])
        tasks.append(asyncio.create_task(consume(await bus.subscribe([topic], group), stops[1])))
        await send_all(bus, topic, events[30:60])
        stops[0].set()  # the first member leaves mid-stream
        await tasks[0]
        tasks.append(asyncio.create_task(consume(await bus.subscribe([topic], group), stops[2])))
        await send_all(bus, topic, events[60:])
        async with asyncio.timeout(60):
            while len(set(received)) < len(events):
                await asyncio.sleep(0.05)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert Counter(received) == Counter(e.id for e in events)
