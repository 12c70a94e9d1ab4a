"""How the MQTT integration delivers, over real sockets: consumer groups through `$share`, at-least-once
QoS 1 (on the embedded log and on a real Kafka), slow readers, events too large for a client, and the
end of a connection when its application is deleted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from hawser.bus._embedded_groups import EmbeddedSubscription
from hawser.bus.embedded import EmbeddedBus
from hawser.events import EventOrigin, events_topic, new_event, partition_key
from hawser.mqtt.packets import ConnAck, Properties, PubAck, Publish, Reason, SubAck
from registry.documents import ApplicationDocument, Metadata
from tests.helpers import eventually
from tests.integration.conftest import running_bus
from tests.integration.test_mqtt_support import (
    INFLIGHT,
    Integration,
    app_client,
    open_subscriptions,
    serve_integration,
)
from tests.mqtt_raw import RawClient
from tests.paho import V5, V311, user_properties


@pytest.fixture
async def mqtt(tmp_path: Path) -> AsyncIterator[Integration]:
    async with running_bus("embedded", tmp_path) as bus, serve_integration(tmp_path, bus) as integration:
        yield integration
    assert open_subscriptions() == 0, "every bus subscription was closed"


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def mqtt_on_each_bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Integration]:
    bootstrap = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    async with running_bus(request.param, tmp_path, bootstrap) as bus, \
            serve_integration(tmp_path, bus) as integration:
        yield integration
    assert open_subscriptions() == 0, "every bus subscription was closed"


async def raw_subscriber(mqtt: Integration, topic_filter: str, qos: int = 1, **connect: object) -> RawClient:
    client = await RawClient.connect(mqtt.port, mqtt.tokens["alice"], **connect)  # type: ignore[arg-type]
    connack = await client.receive()
    assert isinstance(connack, ConnAck)
    assert connack.reason is Reason.SUCCESS
    client.subscribe(topic_filter, qos)
    suback = await client.receive(timeout=60)  # a Kafka group join may take a while
    assert isinstance(suback, SubAck)
    assert suback.reasons == (Reason(qos),)
    return client


async def next_publish(client: RawClient, timeout: float = 10.0) -> Publish:
    packet = await client.receive(timeout)
    assert isinstance(packet, Publish), packet
    return packet


def event_id(publish: Publish) -> str:
    return dict(publish.properties.user_properties)["id"]


async def test_a_shared_subscription_splits_the_events(mqtt_on_each_bus: Integration) -> None:
    mqtt, total = mqtt_on_each_bus, 30
    shared = f"$share/workers/app/{mqtt.a}"
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as one, \
            app_client(mqtt.port, mqtt.tokens["carol"], version=V311) as two:
        assert await one.subscribe([(shared, 1)]) == [1]
        assert await two.subscribe([(shared, 1)]) == [1]
        sent = [await mqtt.publish(mqtt.a, f"device-{i}") for i in range(total)]
        got_one: list[str] = []
        got_two: list[str] = []

        def drained() -> bool:
            while not one.messages.empty():
                got_one.append(user_properties(one.messages.get_nowait())["id"])
            while not two.messages.empty():
                got_two.append(json.loads(two.messages.get_nowait().payload)["id"])
            return len(got_one) + len(got_two) >= total

        await eventually(drained, 30, message="every event")
        later = await mqtt.publish(mqtt.a, "device-0")
        await eventually(lambda: drained() and later in got_one + got_two, message="one more")
    assert sorted(got_one + got_two) == sorted([*sent, later]), "each event exactly once across the group"
    assert got_one, "both members got a share"
    assert got_two, "both members got a share"


async def test_qos1_is_at_least_once(mqtt_on_each_bus: Integration) -> None:
    """A member that acknowledges two events and leaves with more un-acknowledged: the next member of
    its group gets exactly the un-acknowledged ones (and those never sent), in order."""
    mqtt = mqtt_on_each_bus
    shared = f"$share/alo/app/{mqtt.a}"
    leaver = await raw_subscriber(mqtt, shared)
    try:
        sent = [await mqtt.publish(mqtt.a, "one-device", f'{{"n": {i}}}'.encode()) for i in range(INFLIGHT + 3)]
        window = [await next_publish(leaver) for _ in range(INFLIGHT)]
        assert [event_id(p) for p in window] == sent[:INFLIGHT]
        assert all(p.qos == 1 and p.topic == f"app/{mqtt.a}" for p in window)
        with pytest.raises(TimeoutError):  # the window is full: nothing more until acknowledged
            await leaver.receive(timeout=0.5)
        leaver.send(PubAck(window[0].packet_id or 0))
        leaver.send(PubAck(window[1].packet_id or 0))
        more = [await next_publish(leaver) for _ in range(2)]
        assert [event_id(p) for p in more] == sent[INFLIGHT:INFLIGHT + 2]
    finally:
        await leaver.aclose()
    await eventually(lambda: open_subscriptions() == 0, 30, message="the leaver's subscription to close")
    async with app_client(mqtt.port, mqtt.tokens["carol"]) as successor:
        assert await successor.subscribe([(shared, 1)]) == [1]
        again = [user_properties(await successor.next_message(30))["id"] for _ in sent[2:]]
        after = await mqtt.publish(mqtt.a, "one-device")
        assert user_properties(await successor.next_message())["id"] == after
    assert again == sent[2:], "acknowledged events are not delivered again, the others are"


async def test_an_event_too_large_for_the_client_is_skipped_and_counted(mqtt: Integration) -> None:
    def skipped() -> float:
        return REGISTRY.get_sample_value("hawser_mqtt_integration_events_too_large_total") or 0.0

    before = skipped()
    shared = f"$share/small/app/{mqtt.a}"
    client = await raw_subscriber(mqtt, shared, properties=Properties(maximum_packet_size=2048))
    try:
        await mqtt.publish(mqtt.a, "d", b'"' + b"x" * 4096 + b'"')
        small = await mqtt.publish(mqtt.a, "d", b"1")
        publish = await next_publish(client)
        assert event_id(publish) == small
        client.send(PubAck(publish.packet_id or 0))
        assert skipped() == before + 1
    finally:
        await client.aclose()
    await eventually(lambda: open_subscriptions() == 0, message="the subscription to close")
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as successor:
        assert await successor.subscribe([(shared, 1)]) == [1]
        after = await mqtt.publish(mqtt.a, "d")
        assert user_properties(await successor.next_message())["id"] == after, "the skipped one counts as done"


async def test_a_client_that_stops_reading_is_bounded_and_others_go_on(mqtt: Integration) -> None:
    """More than the OS buffers hold (12 MiB; the stuck client's receive buffer is 4 KiB): the server
    stops pulling from the bus for the stuck client while another subscriber gets every event."""
    count, pad = 96, b"x" * (128 * 1024)
    stuck = await raw_subscriber(mqtt, f"app/{mqtt.a}", qos=0, receive_buffer=4096)
    try:
        async with app_client(mqtt.port, mqtt.tokens["carol"]) as reader:
            assert await reader.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
            sent = [await mqtt.publish(mqtt.a, "one-device", b'{"pad": "' + pad + b'"}') for _ in range(count)]
            got = [user_properties(await reader.next_message(30))["id"] for _ in sent]
            assert got == sent
            assert isinstance(mqtt.bus, EmbeddedBus)
            subscriptions = [s for s in mqtt.bus._subscriptions if isinstance(s, EmbeddedSubscription)]
            pulled = sorted(sum(s.positions.values()) for s in subscriptions)
            assert len(pulled) == 2
            assert pulled[0] < count // 2, f"the server read {pulled[0]} of {count} events for a stuck client"
    finally:
        await stuck.aclose()


async def test_unsubscribe_ends_the_delivery(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as client:
        assert await client.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        await mqtt.publish(mqtt.a, "d")
        assert (await client.next_message()).topic == f"app/{mqtt.a}"
        assert await client.unsubscribe(f"app/{mqtt.a}") == [0]
        assert await client.subscribe([(f"a/{mqtt.a}", 1)]) == [1]
        last = await mqtt.publish(mqtt.a, "d")
        message = await client.next_message()
        assert (message.topic, user_properties(message)["id"]) == (f"a/{mqtt.a}", last)
        assert client.messages.empty(), "nothing more on the filter unsubscribed"


@pytest.mark.parametrize("version", [V5, V311])
async def test_a_deleted_application_ends_the_connection(mqtt: Integration, version: int) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"], version=version) as client:
        assert await client.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        await mqtt.store.delete_application(mqtt.a)
        await mqtt.store.create_application(ApplicationDocument(metadata=Metadata(name=mqtt.a)), creator="bob")
        await mqtt.publish(mqtt.a, "bobs-device", b'{"secret": "bob"}')
        reason = await client.wait_disconnected()
        assert client.messages.empty(), "nothing of the new application"
    if version == V5:
        assert reason == Reason.NOT_AUTHORIZED


async def test_an_event_of_another_application_uid_ends_the_connection(mqtt: Integration) -> None:
    """Second line of defence (another instance deleted and recreated the application)."""
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as client:
        assert await client.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        origin = EventOrigin(mqtt.a, "another-uid", "d", "d-uid", "d", "d-uid")
        stray = new_event(origin, channel="c", data=b"{}", instance="test", content_type="application/json")
        await mqtt.bus.send(events_topic(mqtt.a), stray, key=partition_key(mqtt.a, "d"))
        assert await client.wait_disconnected() == Reason.NOT_AUTHORIZED
        assert client.messages.empty()


async def test_the_bus_closing_ends_the_connection(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as client:
        assert await client.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        await mqtt.bus.aclose()
        assert await asyncio.wait_for(client.wait_disconnected(), 10) == Reason.SERVER_SHUTTING_DOWN
