"""The WebSocket integration over a real socket: a real uvicorn, registry and embedded log, and the
`websockets` client an application would use."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hawser.bus._embedded_groups import EmbeddedSubscription
from hawser.bus.embedded import EmbeddedBus
from hawser.events import EventOrigin, events_topic, new_event, partition_key
from registry.documents import ApplicationDocument, Metadata
from tests.helpers import eventually
from tests.integration.conftest import Api, open_sockets


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def recv_json(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), "events are text frames"
    doc: dict[str, Any] = json.loads(message)
    return doc


async def refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers or {}):
            pass
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"{}"), response.headers


async def test_events_arrive_as_structured_cloudevents(api: Api) -> None:
    async with connect(api.events_url(api.a), additional_headers=bearer(api.tokens["alice"])) as ws:
        sent = [await api.publish(api.a, f"dev {i}", data=f'{{"n": {i}}}'.encode()) for i in range(3)]
        received = [await recv_json(ws) for _ in sent]
    assert sorted(e["id"] for e in received) == sorted(sent)
    for event in received:
        n = event["data"]["n"]
        assert event["specversion"] == "1.0"
        assert event["type"] == "io.drogue.event.v1"
        assert event["source"] == f"drogue://{api.a}/dev%20{n}"
        assert event["subject"] == "telemetry"
        assert event["datacontenttype"] == "application/json"
        assert event["application"] == api.a
        assert event["device"] == f"dev {n}"
        assert event["partitionkey"] == f"{api.a}/dev%20{n}"
        assert {"time", "applicationuid", "deviceuid", "sender", "instance"} <= event.keys()


async def test_token_in_query_parameter(api: Api) -> None:
    async with connect(api.events_url(api.a, f"token={api.tokens['carol']}")) as ws:
        sent = await api.publish(api.a, "d")
        assert (await recv_json(ws))["id"] == sent


async def test_basic_user_and_access_token(api: Api) -> None:
    good = base64.b64encode(f"alice:{api.tokens['alice']}".encode()).decode()
    async with connect(api.events_url(api.a), additional_headers={"Authorization": f"Basic {good}"}) as ws:
        sent = await api.publish(api.a, "d")
        assert (await recv_json(ws))["id"] == sent
    wrong_user = base64.b64encode(f"bob:{api.tokens['alice']}".encode()).decode()
    status, _, _ = await refused(api.events_url(api.a), {"Authorization": f"Basic {wrong_user}"})
    assert status == 401


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer hwsr_0123456789abcdef_wrong"},
                                     {"Authorization": "Negotiate xyz"}])
async def test_without_a_valid_token_the_handshake_is_refused(api: Api, headers: dict[str, str] | None) -> None:
    status, problem, response_headers = await refused(api.events_url(api.a), headers)
    assert status == 401
    assert problem["status"] == 401
    assert problem["title"] == "Unauthorized"
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert response_headers["content-type"] == "application/problem+json"


async def test_tenant_isolation(api: Api) -> None:
    """A user without a role on app a, or whose token is scoped elsewhere, is refused before the
    handshake completes (so can never read a frame), exactly as for an application that does not
    exist; meanwhile a legitimate reader does get the event."""
    async with connect(api.events_url(api.a), additional_headers=bearer(api.tokens["alice"])) as ws:
        forbidden = [
            await refused(api.events_url(api.a), bearer(api.tokens["bob"])),
            await refused(api.events_url(api.a, f"token={api.tokens['bob']}")),
            await refused(api.events_url(api.a), bearer(api.tokens["alice-b"])),
        ]
        unknown = await refused(api.events_url("no-such-app"), bearer(api.tokens["bob"]))
        sent = await api.publish(api.a, "secret-device")
        assert (await recv_json(ws))["id"] == sent
    for status, problem, _ in forbidden:
        assert status == 403
        assert problem["detail"] == f"no access to the events of application '{api.a}'"
    assert unknown[0] == 403
    assert unknown[1]["detail"] == "no access to the events of application 'no-such-app'"
    # The superuser may know which applications exist.
    assert (await refused(api.events_url("no-such-app"), bearer(api.tokens["root"])))[0] == 404


async def test_bad_group_id_is_a_bad_request(api: Api) -> None:
    status, problem, _ = await refused(api.events_url(api.a, "group_id=has%20space"),
                                       bearer(api.tokens["alice"]))
    assert (status, problem["status"]) == (400, 400)


async def test_sockets_without_group_each_see_every_new_event(api: Api) -> None:
    before = await api.publish(api.a, "early")
    url = api.events_url(api.a)
    async with connect(url, additional_headers=bearer(api.tokens["alice"])) as one, \
            connect(url, additional_headers=bearer(api.tokens["root"])) as two:
        sent = [await api.publish(api.a, f"d{i}") for i in range(5)]
        got_one = [(await recv_json(one))["id"] for _ in sent]
        got_two = [(await recv_json(two))["id"] for _ in sent]
    assert sorted(got_one) == sorted(got_two) == sorted(sent)
    assert before not in got_one


async def collect(ws: ClientConnection, into: list[str], done: asyncio.Event) -> None:
    while not done.is_set():
        try:
            into.append((await recv_json(ws, timeout=0.2))["id"])
        except TimeoutError:
            continue


async def test_a_group_shares_events_without_duplicates(api: Api) -> None:
    url = api.events_url(api.a, "group_id=workers")
    total = 30
    async with connect(url, additional_headers=bearer(api.tokens["alice"])) as one, \
            connect(url, additional_headers=bearer(api.tokens["carol"])) as two:
        got_one: list[str] = []
        got_two: list[str] = []
        done = asyncio.Event()
        readers = [asyncio.create_task(collect(one, got_one, done)),
                   asyncio.create_task(collect(two, got_two, done))]
        sent = [await api.publish(api.a, f"device-{i}") for i in range(total)]
        try:
            await eventually(lambda: len(got_one) + len(got_two) >= total, message="all events")
        finally:
            done.set()
            await asyncio.gather(*readers)
    assert sorted(got_one + got_two) == sorted(sent), "each event exactly once across the group"
    assert got_one, "both members got a share"
    assert got_two, "both members got a share"


async def test_a_group_resumes_where_it_left_off(api: Api) -> None:
    url = api.events_url(api.a, "group_id=resumers")
    async with connect(url, additional_headers=bearer(api.tokens["alice"])) as ws:
        first = [await api.publish(api.a, f"d{i}") for i in range(3)]
        assert sorted([(await recv_json(ws))["id"] for _ in first]) == sorted(first)
    await eventually(lambda: open_sockets() == 0, message="the server to close the subscription")
    while_away = [await api.publish(api.a, f"d{i}") for i in range(4)]
    async with connect(url, additional_headers=bearer(api.tokens["alice"])) as ws:
        again = [(await recv_json(ws))["id"] for _ in while_away]
        after = await api.publish(api.a, "d0")
        assert (await recv_json(ws))["id"] == after
    assert sorted(again) == sorted(while_away), "missed events arrive, earlier ones do not repeat"


async def test_a_leaving_member_hands_its_partitions_over(api: Api) -> None:
    url = api.events_url(api.a, "group_id=handover")
    async with connect(url, additional_headers=bearer(api.tokens["alice"])) as stays:
        async with connect(url, additional_headers=bearer(api.tokens["alice"])):
            await eventually(lambda: open_sockets() == 2, message="two members")
        await eventually(lambda: open_sockets() == 1, message="the leaver to be gone")
        sent = [await api.publish(api.a, f"device-{i}") for i in range(12)]
        got = [(await recv_json(stays))["id"] for _ in sent]
    assert sorted(got) == sorted(sent)


async def test_a_client_that_stops_reading_loses_nothing(api: Api) -> None:
    """More than the OS buffers hold (12 MiB, client SO_RCVBUF 4 KiB): while the client does not read,
    the server stops pulling from the bus; once it reads again, every event arrives in order."""
    count, pad = 96, b"x" * (128 * 1024)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    port = int(api.url.rsplit(":", 1)[1])
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", port))
    async with connect(api.events_url(api.a), additional_headers=bearer(api.tokens["alice"]),
                       sock=client, max_queue=1, max_size=None) as ws:
        sent = [await api.publish(api.a, "one-device", data=b'{"pad": "' + pad + b'"}')
                for _ in range(count)]
        if isinstance(api.bus, EmbeddedBus):
            (server_side,) = api.bus._subscriptions
            assert isinstance(server_side, EmbeddedSubscription)

            def pulled() -> int:
                return sum(server_side.positions.values())

            await eventually(lambda: pulled() > 0, message="the server to start reading")
            for _ in range(20):  # settled: it stopped pulling well before the end
                before = pulled()
                await asyncio.sleep(0.05)
                if pulled() == before:
                    break
            assert pulled() < count // 2, f"the server read {pulled()} of {count} for a stuck client"
        got = [(await recv_json(ws))["id"] for _ in sent]
    assert got == sent


async def test_a_recreated_application_does_not_stream_to_an_old_socket(api: Api) -> None:
    async with connect(api.events_url(api.a), additional_headers=bearer(api.tokens["alice"])) as ws:
        await eventually(lambda: open_sockets() == 1, message="the socket")
        await api.store.delete_application(api.a)
        await api.store.create_application(ApplicationDocument(metadata=Metadata(name=api.a)),
                                           creator="bob")
        await api.publish(api.a, "bobs-device", data=b'{"secret": "bob"}')
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


async def test_an_event_of_another_application_uid_closes_the_socket(api: Api) -> None:
    """Second line of defence (another instance deleted and recreated the application)."""
    async with connect(api.events_url(api.a), additional_headers=bearer(api.tokens["alice"])) as ws:
        origin = EventOrigin(api.a, "another-uid", "d", "d-uid", "d", "d-uid")
        stray = new_event(origin, channel="c", data=b"{}", instance="test", content_type="application/json")
        await api.bus.send(events_topic(api.a), stray, key=partition_key(api.a, "d"))
        with pytest.raises(ConnectionClosed) as closed:
            await recv_json(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


async def test_closing_clients_release_their_subscriptions(api: Api) -> None:
    assert open_sockets() == 0
    async with connect(api.events_url(api.a), additional_headers=bearer(api.tokens["alice"])):
        await eventually(lambda: open_sockets() == 1, message="the socket to count")
    await eventually(lambda: open_sockets() == 0, message="the socket to be released")
