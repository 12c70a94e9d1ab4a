"""The CoAP device endpoint over real UDP sockets with aiocoap's client, over the SQLite registry and
the embedded durable log: every reply code, confirmable and non-confirmable requests, every publish
parameter read back from the bus, block-wise uploads, command waits and shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import BlockOption, OpaqueOption
from aiocoap.pipe import Pipe
from prometheus_client import REGISTRY

import endpoints.coap
from auth.psk import PskIdentity
from command.sessions import Command
from endpoints._coap_datagram import message_interface
from endpoints.coap import start_coap_server
from hawser.bus.embedded import EmbeddedBus
from hawser.config import CoapEndpointSettings
from hawser.events import CloudEvent
from tests.endpoints.coap_server import COMMAND, CON, NON, World, basic, encode, raw_peer, running_endpoint
from tests.helpers import eventually, unique_name

LIMIT = 4096


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with EmbeddedBus(tmp_path / "events.db", partitions=1) as bus, running_endpoint(
        bus, tmp_path, max_payload_bytes=LIMIT
    ) as running:
        yield running


async def nothing_published(world: World) -> None:
    """The next event of `a` is a fresh marker: whatever was refused before it reached no bus."""
    marker = unique_name("marker").encode()
    response = await world.post(["v1", "marker"], marker)
    assert response.code == Code.CHANGED
    event = await world.reader().one()
    assert event.data == marker


def assert_refused(response: Any, code: Any) -> None:
    assert response.code == code, (response.code, response.payload)
    assert len(response.payload) <= 128
    assert b"Traceback" not in response.payload


# --- publishing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reliability", [CON, NON], ids=["CON", "NON"])
async def test_publish_becomes_a_complete_event(world: World, reliability: Any) -> None:
    response = await world.post(
        ["v1", "temperature"], b'{"temp": 21.5}', content_format=50, query=["data_schema=urn:example:temp"],
        reliability=reliability,
    )
    assert response.code == Code.CHANGED
    assert response.payload == b""
    event = await world.reader().one()
    attributes = event.attributes
    assert attributes["specversion"] == "1.0"
    assert attributes["type"] == "io.drogue.event.v1"
    assert attributes["source"] == f"drogue://{world.a}/d"
    assert attributes["subject"] == "temperature"
    assert attributes["datacontenttype"] == "application/json"
    assert attributes["dataschema"] == "urn:example:temp"
    assert (attributes["application"], attributes["device"], attributes["sender"]) == (world.a, "d", "d")
    assert attributes["deviceuid"] == attributes["senderuid"]
    assert attributes["instance"] == "coap-test"
    assert attributes["partitionkey"] == f"{world.a}/d"
    assert event.data == b'{"temp": 21.5}'


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(["data_schema=urn:x:1", "as=th1"], id="separate"),
        pytest.param(["data_schema=urn%3Ax%3A1&as=th1&ct=0"], id="packed"),
        pytest.param(["ct=0&data_schema=urn%3Ax%3A1", "as=th1"], id="mixed"),
    ],
)
async def test_query_parameters_separate_or_packed(world: World, query: list[str]) -> None:
    response = await world.post(["v1", "t"], b"1", query=query, auth=basic(f"gw@{world.a}", "gwpw"))
    assert response.code == Code.CHANGED
    event = await world.reader().one()
    assert (event.attributes["device"], event.attributes["sender"]) == ("th1", "gw")
    assert event.attributes["dataschema"] == "urn:x:1"
    assert event.attributes["source"] == f"drogue://{world.a}/th1"


async def test_gateway_publishes_as_a_device_named_in_the_path(world: World) -> None:
    response = await world.post(["v1", "t", "th1"], b"p", auth=basic(f"gw@{world.a}", "gwpw"))
    assert response.code == Code.CHANGED
    event = await world.reader().one()
    assert (event.attributes["subject"], event.attributes["device"], event.attributes["sender"]) == ("t", "th1", "gw")


@pytest.mark.parametrize(
    ("user", "password", "path", "query"),
    [
        pytest.param("gw", "gwpw", ["v1", "t", "other"], [], id="not-its-gateway"),
        pytest.param("d", "pw", ["v1", "t", "th1"], [], id="not-a-gateway"),
        pytest.param("gw", "gwpw", ["v1", "t"], ["as=nobody"], id="unknown-device"),
        pytest.param("gw", "gwpw", ["v1", "t", "th1", "x"], [], id="segments-joined"),
    ],
)
async def test_publishing_for_a_device_not_behind_the_gateway_is_forbidden(
    world: World, user: str, password: str, path: list[str], query: list[str]
) -> None:
    response = await world.post(path, b"p", query=query, auth=basic(f"{user}@{world.a}", password))
    assert_refused(response, Code.FORBIDDEN)
    await nothing_published(world)


async def test_path_and_as_parameter_must_agree(world: World) -> None:
    response = await world.post(["v1", "t", "th1"], b"p", query=["as=other"], auth=basic(f"gw@{world.a}", "gwpw"))
    assert_refused(response, Code.BAD_REQUEST)


async def test_other_ways_to_name_the_device(world: World) -> None:
    # A unique username credential, and a user without `@app` plus the `application` parameter.
    assert (await world.post(["v1", "u"], b"1", auth=basic(f"user1@{world.a}", "upw"))).code == Code.CHANGED
    assert (await world.reader().one()).attributes["device"] == "u"
    response = await world.post(["v1", "d"], b"2", auth=basic("d", "pw"), query=[f"application={world.a}"])
    assert response.code == Code.CHANGED
    assert (await world.reader().one()).attributes["device"] == "d"
    response = await world.post(["v1", "b"], b"3", auth=basic("d", "pwb"), query=[f"application={world.b}"])
    assert response.code == Code.CHANGED
    assert (await world.reader(world.b).one()).attributes["application"] == world.b


@pytest.mark.parametrize(
    ("number", "media_type"),
    [
        (0, "text/plain; charset=utf-8"),
        (42, "application/octet-stream"),
        (60, "application/cbor"),
        (110, "application/senml+json"),
        (None, None),
        (65001, None),  # experimental range: no registered media type
        (11060, None),  # application/cbor with deflate coding: not a media type alone
    ],
)
async def test_content_format_becomes_datacontenttype(world: World, number: int | None, media_type: str | None) -> None:
    payload = b"[]" if number == 110 else b"\xa0"
    response = await world.post(["v1", "t"], payload, content_format=number)
    assert response.code == Code.CHANGED
    event = await world.reader().one()
    assert event.attributes.get("datacontenttype") == media_type
    assert event.data == payload


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"", id="empty"),
        pytest.param(b"Bearer abc", id="not-basic"),
        pytest.param(b"Basic !!!", id="not-base64"),
        pytest.param(b"Basic \xff\xfe", id="not-ascii"),
        pytest.param("wrong", id="wrong-password"),
        pytest.param("unknown-app", id="unknown-application"),
    ],
)
async def test_missing_or_bad_credentials_are_4_01(world: World, auth: Any) -> None:
    if auth == "wrong":
        auth = basic(f"d@{world.a}", "nope")
    elif auth == "unknown-app":
        auth = basic("d@no-such-app", "pw")
    message = world.request(["v1", "t"], b"x", auth=auth)
    response = await world.send(message)
    assert_refused(response, Code.UNAUTHORIZED)
    await nothing_published(world)


async def test_disabled_device_is_4_03(world: World) -> None:
    response = await world.post(["v1", "t"], b"x", auth=basic(f"dis@{world.a}", "pw"))
    assert_refused(response, Code.FORBIDDEN)
    assert response.payload == b"The device is disabled."


@pytest.mark.parametrize("reliability", [CON, NON], ids=["CON", "NON"])
async def test_bad_json_for_a_json_format_is_4_06(world: World, reliability: Any) -> None:
    response = await world.post(["v1", "t"], b"{not json", content_format=50, reliability=reliability)
    assert_refused(response, Code.NOT_ACCEPTABLE)
    await nothing_published(world)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        pytest.param(["v1", "t"], ["ct=soon"], id="ct-not-a-number"),
        pytest.param(["v1", "t"], ["ct=3601"], id="ct-too-long"),
        pytest.param(["v1", "a b"], [], id="channel-with-space"),
        pytest.param(["v1", "t"], ["data_schema=a%20b"], id="schema-with-space"),
        pytest.param(["v1", "t"], ["as=%ff"], id="query-not-utf8"),
    ],
)
async def test_bad_parameters_are_4_00(world: World, path: list[str], query: list[str]) -> None:
    response = await world.post(path, b"x", query=query)
    assert_refused(response, Code.BAD_REQUEST)


@pytest.mark.parametrize("path", [["v2", "t"], ["v1"], ["v1", ""], [".well-known", "core"], []])
async def test_other_paths_are_4_04(world: World, path: list[str]) -> None:
    assert_refused(await world.post(path, b"x"), Code.NOT_FOUND)
    assert_refused(await world.send(world.request(path, code=Code.GET)), Code.NOT_FOUND)


@pytest.mark.parametrize("code", [Code.GET, Code.PUT, Code.DELETE, Code.FETCH])
async def test_other_methods_are_4_05(world: World, code: Any) -> None:
    assert_refused(await world.post(["v1", "t"], b"x", code=code), Code.METHOD_NOT_ALLOWED)


async def test_unknown_critical_option_is_4_02_and_unknown_elective_is_ignored(world: World) -> None:
    response = await world.post(["v1", "t"], b"x", options=[OpaqueOption(9999, b"?")])
    assert_refused(response, Code.BAD_OPTION)
    response = await world.post(["v1", "t"], b"elective", options=[OpaqueOption(9998, b"?")])
    assert response.code == Code.CHANGED
    assert (await world.reader().one()).data == b"elective"


async def test_proxy_options_are_5_05(world: World) -> None:
    message = world.request(["v1", "t"], b"x", auth=basic(f"d@{world.a}", "pw"))
    message.opt.proxy_scheme = "http"
    assert_refused(await world.send(message), Code.PROXYING_NOT_SUPPORTED)


async def test_announced_size_over_the_limit_is_4_13_with_size1(world: World) -> None:
    message = world.request(["v1", "t"], b"x", auth=basic(f"d@{world.a}", "pw"))
    message.opt.size1 = LIMIT + 1
    response = await world.send(message)
    assert_refused(response, Code.REQUEST_ENTITY_TOO_LARGE)
    assert response.opt.size1 == LIMIT
    await nothing_published(world)


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 2000], ids=["at-the-limit", "over-the-limit"])
async def test_a_body_in_one_large_datagram_is_read_whole(world: World, size: int) -> None:
    """Not block-wise: one datagram over aiocoap's 4 KiB receive buffer was read cut short, and the
    cut body published as if whole (2.04 to a body over the limit, too)."""
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    async with raw_peer(world.port) as peer:
        peer.send(encode(world.request(["v1", "one"], payload, auth=basic(f"d@{world.a}", "pw")), mid=1, token=b"big"))
        reply = await peer.reply_to(b"big")
    if size > LIMIT:
        assert_refused(reply, Code.REQUEST_ENTITY_TOO_LARGE)
        assert reply.opt.size1 == LIMIT
        await nothing_published(world)
    else:
        assert reply.code == Code.CHANGED
        assert (await world.reader().one()).data == payload


def datagrams_dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("hawser_coap_datagrams_dropped_total", {"reason": reason}) or 0.0


async def test_a_datagram_still_read_cut_short_is_dropped(world: World) -> None:
    before = datagrams_dropped("cut-short")
    request = encode(world.request(["v1", "cut"], b"x" * 100, auth=basic(f"d@{world.a}", "pw")), mid=2, token=b"c")
    receive = message_interface(world.server._contexts[0]).datagram_msg_received
    receive(request[:-50], [], socket.MSG_TRUNC, ("::ffff:127.0.0.1", 9, 0, 0))
    assert datagrams_dropped("cut-short") == before + 1
    await nothing_published(world)


async def test_a_udp_port_in_use_is_refused(world: World) -> None:
    """aiocoap binds with SO_REUSEPORT: a second server on the port would silently share the traffic."""
    settings = CoapEndpointSettings(host="127.0.0.1", port=world.port, dtls_port=-1)
    with pytest.raises(OSError, match="in use"):  # (were it to start, this test fails: its sockets leak)
        await start_coap_server(world.endpoint, settings, None)
    await nothing_published(world)


async def test_bus_unavailable_is_5_03_with_max_age(world: World) -> None:
    await world.bus.aclose()
    response = await world.post(["v1", "t"], b"x")
    assert_refused(response, Code.SERVICE_UNAVAILABLE)
    assert response.opt.max_age == 5


async def test_a_bug_is_5_00_logged_with_its_traceback(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(world.authenticator, "authenticate", broken)
    with caplog.at_level(logging.ERROR, logger="endpoints.coap"):
        response = await world.post(["v1", "t"], b"x")
    assert_refused(response, Code.INTERNAL_SERVER_ERROR)
    assert b"secret" not in response.payload
    assert any(record.exc_info and "secret internals" in str(record.exc_info[1]) for record in caplog.records)


# --- block-wise uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize("reliability", [CON, NON], ids=["CON", "NON"])
async def test_block_wise_upload_becomes_one_event(world: World, reliability: Any) -> None:
    payload = bytes(range(256)) * 12  # 3 KiB: three blocks of 1024
    response = await world.post(["v1", "big"], payload, reliability=reliability)
    assert response.code == Code.CHANGED
    event = await world.reader().one()
    assert event.data == payload
    assert event.attributes["subject"] == "big"
    assert len(world.endpoint.blocks) == 0
    await nothing_published(world)


async def test_block_wise_upload_over_the_limit_is_4_13_before_it_is_buffered(world: World) -> None:
    response = await world.post(["v1", "big"], b"x" * (LIMIT + 1))
    assert_refused(response, Code.REQUEST_ENTITY_TOO_LARGE)
    assert response.opt.size1 == LIMIT
    assert len(world.endpoint.blocks) == 0
    await nothing_published(world)


def block(world: World, number: int, more: bool, payload: bytes, auth: bytes | None) -> Any:
    message = world.request(["v1", "blocks"], payload, auth=auth)
    message.opt.block1 = (number, more, 4)  # 256-byte blocks
    return message


async def test_blocks_are_authenticated_one_by_one_and_never_spooled_without(world: World) -> None:
    good = basic(f"d@{world.a}", "pw")
    response = await world.send(block(world, 0, True, b"a" * 256, None), handle_blockwise=False)
    assert_refused(response, Code.UNAUTHORIZED)
    assert len(world.endpoint.blocks) == 0
    response = await world.send(block(world, 0, True, b"a" * 256, good), handle_blockwise=False)
    assert response.code == Code.CONTINUE
    assert tuple(response.opt.block1) == (0, True, 4)
    assert len(world.endpoint.blocks) == 1
    # The next block with other (or no) credentials belongs to no transfer: it cannot join this one.
    response = await world.send(block(world, 1, False, b"b", None), handle_blockwise=False)
    assert_refused(response, Code.UNAUTHORIZED)
    response = await world.send(block(world, 1, False, b"b", good), handle_blockwise=False)
    assert response.code == Code.CHANGED
    assert tuple(response.opt.block1) == (1, False, 4)
    assert (await world.reader().one()).data == b"a" * 256 + b"b"


async def test_a_block_without_its_predecessors_is_4_08(world: World) -> None:
    good = basic(f"d@{world.a}", "pw")
    response = await world.send(block(world, 3, False, b"z", good), handle_blockwise=False)
    assert_refused(response, Code.REQUEST_ENTITY_INCOMPLETE)
    assert (await world.send(block(world, 0, True, b"a" * 256, good), handle_blockwise=False)).code == Code.CONTINUE
    response = await world.send(block(world, 2, False, b"z", good), handle_blockwise=False)  # block 1 missing
    assert_refused(response, Code.REQUEST_ENTITY_INCOMPLETE)
    assert len(world.endpoint.blocks) == 0
    response = await world.send(block(world, 0, True, b"a" * 100, good), handle_blockwise=False)  # not full
    assert_refused(response, Code.BAD_REQUEST)
    await nothing_published(world)


async def test_blocks_of_two_devices_from_one_address_never_mix(world: World) -> None:
    """One client address, two devices: each transfer is keyed by its credentials too, so the
    gateway's block cannot complete (and publish as itself) the body device d started."""
    device, gateway = basic(f"d@{world.a}", "pw"), basic(f"gw@{world.a}", "gwpw")
    assert (await world.send(block(world, 0, True, b"d" * 256, device), handle_blockwise=False)).code == Code.CONTINUE
    response = await world.send(block(world, 1, False, b"g", gateway), handle_blockwise=False)
    assert_refused(response, Code.REQUEST_ENTITY_INCOMPLETE)
    response = await world.send(block(world, 1, False, b"!", device), handle_blockwise=False)
    assert response.code == Code.CHANGED
    event = await world.reader().one()
    assert (event.attributes["sender"], event.data) == ("d", b"d" * 256 + b"!")


@pytest.mark.parametrize("number", [OptionNumber.BLOCK1, OptionNumber.BLOCK2])
async def test_a_repeated_block_option_is_4_02_and_no_bug(
    world: World, number: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """aiocoap reads the first of two Block2 options, the endpoint read the last: block 0 was then
    built through the path of a later block (5.00 and a traceback per datagram)."""
    message = world.request(["v1", "t"], b"x", auth=basic(f"d@{world.a}", "pw"))
    message.opt.add_option(BlockOption(number, BlockOption.BlockwiseTuple(0, False, 6)))
    message.opt.add_option(BlockOption(number, BlockOption.BlockwiseTuple(5, False, 6)))
    with caplog.at_level(logging.ERROR):
        response = await world.send(message, handle_blockwise=False)
    assert_refused(response, Code.BAD_OPTION)
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []
    await nothing_published(world)


# --- commands -------------------------------------------------------------------------------------


async def test_ct_waits_and_answers_2_04_without_a_command(world: World) -> None:
    started = time.monotonic()
    response = await world.post(["v1", "t"], b"x", query=["ct=1"])
    elapsed = time.monotonic() - started
    assert response.code == Code.CHANGED
    assert 0.9 <= elapsed < 5.0
    assert (await world.reader().one()).data == b"x"
    assert len(world.sessions) == 0


async def deliver_when_waiting(world: World, command: Command, gateways: tuple[str, ...] = ()) -> int:
    await eventually(lambda: len(world.sessions) == 1, message="the request waits for a command")
    return world.sessions.deliver(command, gateways)


@pytest.mark.parametrize("reliability", [CON, NON], ids=["CON", "NON"])
async def test_a_command_within_ct_is_2_05_with_its_name(world: World, reliability: Any) -> None:
    command = Command(world.a, "d", "set-led", b'{"on":true}', "application/json")
    request = asyncio.create_task(world.post(["v1", "t"], b"x", query=["ct=30"], reliability=reliability))
    assert await deliver_when_waiting(world, command) == 1
    response = await request
    assert response.code == Code.CONTENT
    assert response.payload == b'{"on":true}'
    assert [option.value for option in response.opt.get_option(COMMAND)] == [b"set-led"]
    assert response.opt.content_format == 50
    assert len(world.sessions) == 0


async def test_a_gateway_gets_the_command_of_the_device_it_published_for(world: World) -> None:
    command = Command(world.a, "th1", "reboot", b"now")
    request = asyncio.create_task(
        world.post(["v1", "t", "th1"], b"x", query=["ct=30"], auth=basic(f"gw@{world.a}", "gwpw"))
    )
    assert world.sessions.deliver(Command(world.a, "gw", "not-for-th1")) == 0  # nothing waits yet
    assert await deliver_when_waiting(world, command, gateways=("gw",)) == 1
    response = await request
    assert response.code == Code.CONTENT
    assert response.payload == b"now"
    assert [option.value for option in response.opt.get_option(COMMAND)] == [b"reboot"]
    assert response.opt.content_format is None


async def test_a_command_larger_than_a_datagram_is_sent_block_wise(world: World) -> None:
    payload = bytes(range(256)) * 10
    request = asyncio.create_task(world.post(["v1", "t"], b"once", query=["ct=30"]))
    assert await deliver_when_waiting(world, Command(world.a, "d", "firmware", payload)) == 1
    response = await request
    assert response.code == Code.CONTENT
    assert response.payload == payload
    assert (await world.reader().one()).data == b"once"
    await nothing_published(world)  # fetching the later blocks published nothing again


async def test_a_device_holds_a_bounded_number_of_command_waits(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wait holds its request (body and all) for up to an hour: a device starting more than
    MAX_WAITS_PER_DEVICE ends its oldest (2.04 now), and beyond MAX_WAITS nobody waits."""
    monkeypatch.setattr(endpoints.coap, "MAX_WAITS_PER_DEVICE", 2)
    monkeypatch.setattr(endpoints.coap, "MAX_WAITS", 3)
    requests = []
    for number in range(3):
        requests.append(asyncio.create_task(world.post(["v1", "t"], str(number).encode(), query=["ct=60"])))
        if number < 2:
            await eventually(lambda: len(world.sessions) == len(requests))
    async with asyncio.timeout(10):
        oldest = await requests[0]  # ended by the third, which took its place
    assert oldest.code == Code.CHANGED
    assert not requests[1].done()
    assert not requests[2].done()
    gateway = asyncio.create_task(world.post(["v1", "t"], b"gw", query=["ct=60"], auth=basic(f"gw@{world.a}", "gwpw")))
    await eventually(lambda: len(world.sessions) == 3)
    async with asyncio.timeout(10):  # MAX_WAITS reached: published, and answered without waiting
        response = await world.post(["v1", "t"], b"u", query=["ct=60"], auth=basic(f"user1@{world.a}", "upw"))
    assert response.code == Code.CHANGED
    assert len(world.sessions) == 3
    closing = asyncio.create_task(world.server.aclose())  # ends the waits: each gets its 2.04
    assert [r.code for r in await asyncio.gather(*requests[1:], gateway)] == [Code.CHANGED] * 3
    await closing
    assert world.endpoint._device_waits == {}
    assert sorted(e.data for e in await world.reader().take(5)) == [b"0", b"1", b"2", b"gw", b"u"]


async def test_shutdown_ends_command_waits_with_2_04_and_refuses_new_requests(world: World) -> None:
    request = asyncio.create_task(world.post(["v1", "t"], b"x", query=["ct=60"]))
    await eventually(lambda: len(world.sessions) == 1)
    started = time.monotonic()
    closing = asyncio.create_task(world.server.aclose())
    response = await request
    assert response.code == Code.CHANGED
    assert time.monotonic() - started < 5.0
    await closing
    await world.server.aclose()  # idempotent
    assert len(world.sessions) == 0


async def test_shutdown_delivers_the_2_04_of_every_wait_behind_one_address(world: World) -> None:
    """Ended waits answer with separate responses, which aiocoap sends one at a time per remote
    (NSTART 1): the second waits for the first one's ACK, and shutting the context down at once
    dropped it (a device behind that address published and never heard back)."""
    devices = [("d", "pw"), ("gw", "gwpw"), ("user1", "upw"), ("d", "pw")]
    requests = [
        asyncio.create_task(world.post(["v1", "t"], b"x", query=["ct=60"], auth=basic(f"{user}@{world.a}", password)))
        for user, password in devices
    ]
    await eventually(lambda: len(world.sessions) == len(devices))
    closing = asyncio.create_task(world.server.aclose())
    async with asyncio.timeout(10):
        responses = await asyncio.gather(*requests)
    assert [response.code for response in responses] == [Code.CHANGED] * len(devices)
    await closing


async def test_requests_while_draining_are_5_03(world: World) -> None:
    world.endpoint._draining = True
    try:
        response = await world.post(["v1", "t"], b"x")
    finally:
        world.endpoint._draining = False
    assert_refused(response, Code.SERVICE_UNAVAILABLE)
    assert response.opt.max_age == 1
    await nothing_published(world)


# --- DTLS identities (in process: the DTLS transport hands the site a verified remote) --------------


class VerifiedRemote:
    """What the DTLS transport's remote offers the site: the verified identity as a claim."""

    def __init__(self, identity: PskIdentity) -> None:
        self.authenticated_claims = [identity]
        self.blockwise_key = ("dtls", identity)
        self.maximum_payload_size = 1024


async def test_a_verified_psk_identity_wins_over_option_4209(world: World) -> None:
    request = world.request(["v1", "t"], b"dtls", auth=basic(f"d@{world.a}", "wrong"), query=["as=th1"])
    request.remote = VerifiedRemote(PskIdentity(world.a, "gw"))
    response = await world.endpoint.respond(request)
    assert response.code == Code.CHANGED
    event: CloudEvent = await world.reader().one()
    assert (event.attributes["device"], event.attributes["sender"], event.data) == ("th1", "gw", b"dtls")
    request = world.request(["v1", "t"], b"no", query=[])
    request.remote = VerifiedRemote(PskIdentity(world.a, "dis"))
    assert_refused(await world.endpoint.respond(request), Code.FORBIDDEN)
    request.remote = VerifiedRemote(PskIdentity(world.a, "gone"))
    assert_refused(await world.endpoint.respond(request), Code.UNAUTHORIZED)



async def test_a_request_cancelled_before_its_task_ran_leaves_no_coroutine_behind(world: World) -> None:
    """aiocoap cancels a request's task when the requester loses interest (its address failed, a new
    request took its token), possibly before the task's first step; nothing must be left unawaited
    (the suite turns the RuntimeWarning that would give into an error)."""
    context = world.server._contexts[0]
    pipe = Pipe(world.request(["v1", "t"], b"x"), logging.getLogger("test"))
    stop = pipe.on_event(lambda event: True)
    context.render_to_pipe(pipe)
    stop()  # interest ends in the same loop iteration: the task is cancelled before it ran
    await asyncio.sleep(0)
    gc.collect()
    await nothing_published(world)
