"""The MQTT integration over real sockets with real clients (paho-mqtt 3.1.1 and 5, amqtt, mosquitto_sub):
what applications receive, how they authenticate, and what they may not do."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from amqtt.client import MQTTClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode

from hawser.access import Role
from hawser.bus import EventBus, Subscription
from hawser.mqtt.packets import ConnAck, Properties, Reason, SubAck, Unsubscribe
from integration import _mqtt_flow
from integration._mqtt_events import STRUCTURED_CONTENT_TYPE
from integration.mqtt import MAX_OPEN_SUBSCRIPTIONS
from tests.helpers import eventually, unique_name
from tests.integration.conftest import running_bus
from tests.integration.test_mqtt_support import (
    Integration,
    app_client,
    open_connections,
    open_subscriptions,
    serve_integration,
)
from tests.mqtt_raw import RawClient
from tests.paho import V5, V311, Paho, paho_properties, prop, user_properties


@pytest.fixture
async def mqtt(tmp_path: Path) -> AsyncIterator[Integration]:
    async with running_bus("embedded", tmp_path) as bus, serve_integration(tmp_path, bus) as integration:
        yield integration
    assert open_subscriptions() == 0, "every bus subscription was closed"


async def test_mqtt5_subscribers_get_data_with_attributes_as_user_properties(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as client:
        assert await client.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        sent = [await mqtt.publish(mqtt.a, f"dev {i}", f'{{"n": {i}}}'.encode()) for i in range(3)]
        received = [await client.next_message() for _ in sent]
    by_id = {user_properties(m)["id"]: m for m in received}
    assert sorted(by_id) == sorted(sent)
    for message in received:
        attributes = user_properties(message)
        n = json.loads(message.payload)["n"]
        assert message.topic == f"app/{mqtt.a}"
        assert message.qos == 1
        assert prop(message.properties, "ContentType") == "application/json"
        assert attributes["specversion"] == "1.0"
        assert attributes["type"] == "io.drogue.event.v1"
        assert attributes["source"] == f"drogue://{mqtt.a}/dev%20{n}"
        assert attributes["subject"] == "telemetry"
        assert attributes["application"] == mqtt.a
        assert attributes["device"] == f"dev {n}"
        assert attributes["partitionkey"] == f"{mqtt.a}/dev%20{n}"
        assert {"time", "applicationuid", "deviceuid", "sender", "senderuid", "instance"} <= attributes.keys()
        assert "datacontenttype" not in attributes, "it is the Content Type"


async def test_mqtt5_structured_mode_on_request_as_drogue(mqtt: Integration) -> None:
    properties = paho_properties(PacketTypes.SUBSCRIBE, UserProperty=("content-mode", "structured"))
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as client:
        assert await client.subscribe(f"app/{mqtt.a}", 0, properties=properties) == [0]
        sent = await mqtt.publish(mqtt.a, "d", b"hello", content_type="text/plain")
        message = await client.next_message()
    event = json.loads(message.payload)
    assert (event["id"], event["data"], event["datacontenttype"]) == (sent, "hello", "text/plain")
    assert prop(message.properties, "ContentType") == STRUCTURED_CONTENT_TYPE
    assert message.qos == 0


async def test_subscription_identifiers_and_an_unknown_content_mode(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as client:
        identified = paho_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7)
        assert await client.subscribe(f"app/{mqtt.a}", 1, properties=identified) == [1]
        await mqtt.publish(mqtt.a, "d")
        assert prop((await client.next_message()).properties, "SubscriptionIdentifier") == [7]
        unknown = paho_properties(PacketTypes.SUBSCRIBE, UserProperty=("content-mode", "protobuf"))
        assert await client.subscribe(f"a/{mqtt.a}", 1, properties=unknown) == [Reason.IMPLEMENTATION_SPECIFIC_ERROR]


async def test_mqtt311_subscribers_get_structured_json(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["carol"], version=V311) as client:
        assert await client.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        sent = await mqtt.publish(mqtt.a, "dev-1", b'{"temp": 21.5}')
        message = await client.next_message()
    event = json.loads(message.payload)
    assert message.topic == f"app/{mqtt.a}"
    assert event["id"] == sent
    assert event["data"] == {"temp": 21.5}
    assert event["datacontenttype"] == "application/json"
    assert event["device"] == "dev-1"
    assert event["application"] == mqtt.a


async def test_amqtt_client(mqtt: Integration) -> None:
    client = MQTTClient(config={"auto_reconnect": False})
    await client.connect(f"mqtt://{mqtt.tokens['alice']}@127.0.0.1:{mqtt.port}/")
    try:
        assert await client.subscribe([(f"$share/amqtt/app/{mqtt.a}", 1)]) == [1]
        sent = await mqtt.publish(mqtt.a, "dev-1")
        message = await client.deliver_message(timeout_duration=10)
    finally:
        await client.disconnect()
    assert message is not None
    assert message.topic == f"app/{mqtt.a}"
    assert json.loads(bytes(message.data))["id"] == sent


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients is not installed")
@pytest.mark.parametrize("version", ["mqttv5", "mqttv311"])
@pytest.mark.parametrize("login", ["token", "user-and-token"])
async def test_mosquitto_sub(mqtt: Integration, version: str, login: str) -> None:
    credentials = (["-u", mqtt.tokens["alice"]] if login == "token"
                   else ["-u", "alice", "-P", mqtt.tokens["alice"]])
    before = open_subscriptions()
    process = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-V", version, *credentials,
        "-t", f"app/{mqtt.a}", "-q", "1", "-C", "3", "-W", "20", "-F", "%t %p",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await eventually(lambda: open_subscriptions() == before + 1 or process.returncode is not None,
                         message="mosquitto_sub to subscribe")
        sent = [await mqtt.publish(mqtt.a, f"d{i}", f'{{"n": {i}}}'.encode()) for i in range(3)]
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 3
    topics = {line.split(" ", 1)[0] for line in lines}
    payloads = [line.split(" ", 1)[1] for line in lines]
    assert topics == {f"app/{mqtt.a}"}
    if version == "mqttv5":
        assert sorted(json.loads(p)["n"] for p in payloads) == [0, 1, 2], "v5: the data itself"
    else:
        assert sorted(json.loads(p)["id"] for p in payloads) == sorted(sent), "3.1.1: the whole event"


# --- authentication --------------------------------------------------------------------------------


async def connack(port: int, version: int, username: str | None, password: str | None = None,
                  *, clean: bool = True) -> tuple[ReasonCode, PahoProperties | None]:
    """The CONNACK's code (paho reports a 3.1.1 return code as its MQTT 5 equivalent) and properties."""
    client = Paho(unique_name("auth"), version=version, username=username, password=password, clean=clean)
    try:
        code = await client.connect(port)
        return code, client.connack_properties
    finally:
        await client.aclose()


@pytest.mark.parametrize("version", [V5, V311])
async def test_token_as_user_name_or_as_password(mqtt: Integration, version: int) -> None:
    token = mqtt.tokens["alice"]
    for username, password in [(token, None), (token, ""), ("alice", token)]:
        code, _ = await connack(mqtt.port, version, username, password)
        assert code == Reason.SUCCESS, (username == token, password)


async def test_mqtt5_password_alone_is_a_token(mqtt: Integration) -> None:
    """paho sends no password without a user name, so this client is Hawser's own codec."""
    client = await RawClient.connect(mqtt.port, None, password=mqtt.tokens["carol"].encode())
    try:
        reply = await client.receive()
    finally:
        await client.aclose()
    assert isinstance(reply, ConnAck)
    assert reply.reason is Reason.SUCCESS


@pytest.mark.parametrize("version", [V5, V311])
@pytest.mark.parametrize("case", ["bad-token", "other-users-token", "nothing", "garbage-user"])
async def test_bad_credentials_are_refused(mqtt: Integration, version: int, case: str) -> None:
    """0x86 in MQTT 5; return code 4 in 3.1.1."""
    username, password = {
        "bad-token": ("hwsr_0123456789abcdef_wrong", None),
        "other-users-token": ("bob", mqtt.tokens["alice"]),
        "nothing": (None, None),
        "garbage-user": ("x" * 600, None),
    }[case]
    code, _ = await connack(mqtt.port, version, username, password)
    assert code == Reason.BAD_USER_NAME_OR_PASSWORD


async def test_mqtt5_enhanced_authentication_is_refused(mqtt: Integration) -> None:
    """0x8C, as the device endpoint: a client expecting an AUTH exchange must not be left waiting."""
    client = await RawClient.connect(mqtt.port, mqtt.tokens["alice"],
                                     properties=Properties(authentication_method="SCRAM-SHA-256"))
    try:
        connack = await client.receive()
        assert isinstance(connack, ConnAck)
        assert connack.reason is Reason.BAD_AUTHENTICATION_METHOD
        assert await client.receive() is None
    finally:
        await client.aclose()


async def test_mqtt311_persistent_sessions_are_refused_as_drogue(mqtt: Integration) -> None:
    code, _ = await connack(mqtt.port, V311, mqtt.tokens["alice"], clean=False)
    assert code == Reason.SERVER_UNAVAILABLE, "return code 3, as Drogue's"


async def test_mqtt5_sessions_end_with_the_connection(mqtt: Integration) -> None:
    """MQTT 5 may ask for a session that outlives the connection: it is told it expires at once."""
    client = Paho(unique_name("session"), version=V5, username=mqtt.tokens["alice"])
    asked = paho_properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)
    try:
        assert await client.connect(mqtt.port, properties=asked) == Reason.SUCCESS
        properties = client.connack_properties
    finally:
        await client.aclose()
    assert prop(properties, "SessionExpiryInterval") == 0
    assert prop(properties, "SharedSubscriptionAvailable") == 1
    assert prop(properties, "WildcardSubscriptionAvailable") == 0


# --- what applications may not do ------------------------------------------------------------------


@pytest.mark.parametrize("version", [V5, V311])
async def test_tenant_isolation(mqtt: Integration, version: int) -> None:
    """Not a member, a token scoped elsewhere, an application that does not exist, a wildcard: each
    filter refused (0x87 / 0xA2; 0x80 in 3.1.1), and nothing of app a reaches those connections,
    while a member does get the event."""
    refused = 0x80 if version == V311 else Reason.NOT_AUTHORIZED
    async with app_client(mqtt.port, mqtt.tokens["alice"], version=version) as alice, \
            app_client(mqtt.port, mqtt.tokens["bob"], version=version) as bob, \
            app_client(mqtt.port, mqtt.tokens["alice-b"], version=version) as scoped:
        assert await alice.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        assert await bob.subscribe([(f"app/{mqtt.a}", 1)]) == [refused]
        assert await bob.subscribe([(f"$share/g/app/{mqtt.a}", 1)]) == [refused]
        assert await bob.subscribe([("app/no-such-app", 1)]) == [refused]
        assert await scoped.subscribe([(f"app/{mqtt.a}", 1)]) == [refused]
        wildcard = 0x80 if version == V311 else Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        assert await bob.subscribe([("app/+", 1)]) == [wildcard]
        assert await bob.subscribe([("#", 1)]) == [wildcard]
        await mqtt.store.set_members(mqtt.b, {"bob": Role.ADMIN, "alice": Role.READER})
        assert await scoped.subscribe([(f"app/{mqtt.b}", 1)]) == [1], "the scope covers b, alice reads b"
        sent = await mqtt.publish(mqtt.a, "secret-device")
        message = await alice.next_message()
        assert sent in message.payload.decode() + str(user_properties(message))
        assert bob.messages.empty()
        assert scoped.messages.empty()
    # The superuser reads any application, but an unknown one is refused all the same.
    async with app_client(mqtt.port, mqtt.tokens["root"], version=version) as root:
        assert await root.subscribe([(f"app/{mqtt.a}", 1)]) == [1]
        assert await root.subscribe([("app/no-such-app", 1)]) == [refused]


async def test_one_subscribe_gets_one_answer_per_filter(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as client:
        codes = await client.subscribe([(f"app/{mqtt.a}", 1), (f"a/{mqtt.b}", 0), ("events/x", 1),
                                        (f"$share/g/application/{mqtt.a}", 2)])
        assert codes == [1, Reason.NOT_AUTHORIZED, Reason.TOPIC_FILTER_INVALID, 1], "QoS 2 is granted as 1"
        assert await client.subscribe([(f"app/{mqtt.a}", 0)]) == [1], "the same filter again keeps its QoS"


async def test_publishing_is_refused_until_commands_arrive(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as v5:
        command = await v5.publish(f"command/{mqtt.a}/dev/set", b"{}", qos=1)
        other = await v5.publish("somewhere", b"{}", qos=1)
        await v5.publish("somewhere", b"{}", qos=0)
        assert await v5.subscribe([(f"app/{mqtt.a}", 1)]) == [1], "the connection goes on"
    assert command == other == Reason.IMPLEMENTATION_SPECIFIC_ERROR
    async with app_client(mqtt.port, mqtt.tokens["alice"], version=V311) as v311:
        v311.client.publish("somewhere", b"{}", qos=0)
        assert await v311.subscribe([(f"app/{mqtt.a}", 1)]) == [1], "QoS 0: dropped, the connection goes on"
        v311.client.publish(f"command/{mqtt.a}/dev/set", b"{}", qos=1)
        await v311.wait_disconnected()


async def test_closing_clients_release_their_subscriptions(mqtt: Integration) -> None:
    async with app_client(mqtt.port, mqtt.tokens["alice"]) as one, \
            app_client(mqtt.port, mqtt.tokens["carol"], version=V311) as two:
        await one.subscribe([(f"app/{mqtt.a}", 1)])
        await one.subscribe([(f"$share/g/app/{mqtt.a}", 1)])
        await two.subscribe([(f"$share/g/app/{mqtt.a}", 1)])
        assert open_subscriptions() == 3
        assert open_connections() == 2
        assert await one.unsubscribe(f"app/{mqtt.a}") == [0]
        assert await one.unsubscribe(f"app/{mqtt.a}") == [Reason.NO_SUBSCRIPTION_EXISTED]
        await eventually(lambda: open_subscriptions() == 2, message="the unsubscribed one to close")
    await eventually(lambda: open_subscriptions() == 0 and open_connections() == 0,
                     message="every subscription and connection to be released")


class LingeringBus:
    """A real bus whose subscriptions take until `gate` is set to close (timing only)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.gate = asyncio.Event()

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        return cast(Subscription, _Lingering(await self.bus.subscribe(topics, group), self.gate))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)


class _Lingering:
    def __init__(self, inner: Subscription, gate: asyncio.Event) -> None:
        self.inner, self.gate = inner, gate

    def __aiter__(self) -> Any:
        return self.inner.__aiter__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def aclose(self) -> None:
        await self.gate.wait()
        await self.inner.aclose()


async def test_subscribe_unsubscribe_loops_cannot_pile_up_bus_subscriptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsubscribed filter's bus subscription takes a while to close (its last commit, leaving
    the group); a client that subscribes and unsubscribes in a loop is refused (0x97) once too many
    are still closing, instead of opening consumers without end, and served again once they closed."""
    monkeypatch.setattr(_mqtt_flow, "FINAL_COMMIT_S", 60.0)  # they linger as long as the test wants
    async with running_bus("embedded", tmp_path) as real:
        bus = LingeringBus(real)
        async with serve_integration(tmp_path, cast(EventBus, bus)) as mqtt:
            client = await RawClient.connect(mqtt.port, mqtt.tokens["alice"])
            try:
                assert isinstance(await client.receive(), ConnAck)
                topic_filter = f"app/{mqtt.a}"
                codes = []
                for n in range(MAX_OPEN_SUBSCRIPTIONS + 4):
                    client.subscribe(topic_filter, 1, packet_id=2 * n + 1)
                    suback = await client.receive()
                    assert isinstance(suback, SubAck)
                    codes.append(suback.reasons[0])
                    client.send(Unsubscribe(2 * n + 2, (topic_filter,)))
                    await client.receive()
                assert codes[:MAX_OPEN_SUBSCRIPTIONS] == [Reason.GRANTED_QOS_1] * MAX_OPEN_SUBSCRIPTIONS
                assert set(codes[MAX_OPEN_SUBSCRIPTIONS:]) == {Reason.QUOTA_EXCEEDED}
                assert open_subscriptions() == MAX_OPEN_SUBSCRIPTIONS
                bus.gate.set()
                await eventually(lambda: open_subscriptions() == 0)
                client.subscribe(topic_filter, 1, packet_id=1000)
                assert await client.receive() == SubAck(1000, (Reason.GRANTED_QOS_1,))
            finally:
                bus.gate.set()
                await client.aclose()
    await eventually(lambda: open_subscriptions() == 0)
