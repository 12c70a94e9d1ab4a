"""The CoAP endpoint's UDP socket under hostile input, over real sockets and the embedded log:
random datagrams, mutated and truncated requests and random options never crash it (no exception
reaches the event loop) and it answers a valid request after each; retransmissions (same message id,
same token) give one event and the same reply; a flood of unauthenticated requests does not stop a
legitimate device from getting its 2.04 in time."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from aiocoap.optiontypes import OpaqueOption
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hawser.bus.embedded import EmbeddedBus
from tests.endpoints.coap_server import AUTH, RawPeer, World, basic, encode, raw_peer, running_endpoint
from tests.helpers import unique_name

FUZZ = settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_ids = itertools.count(1)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with EmbeddedBus(tmp_path / "events.db", partitions=1) as bus, running_endpoint(bus, tmp_path) as running:
        yield running


@pytest.fixture
async def peer(world: World) -> AsyncIterator[RawPeer]:
    async with raw_peer(world.port) as raw:
        yield raw


@pytest.fixture
async def prober(world: World) -> AsyncIterator[RawPeer]:
    """A socket of its own for the valid requests between hostile ones: a hostile datagram may
    take a message id the next probe would use, and aiocoap would rightly drop that probe as its
    duplicate (message ids are per sender address)."""
    async with raw_peer(world.port) as raw:
        yield raw


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """Whatever reaches the event loop's exception handler meanwhile (aiocoap lets exceptions out of
    its datagram callback there)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    caught: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: caught.append(context))
    try:
        yield caught
    finally:
        loop.set_exception_handler(previous)


def next_ids() -> tuple[int, bytes]:
    number = next(_ids)
    return number & 0xFFFF, number.to_bytes(4, "big")


def valid_request(world: World, payload: bytes = b"probe", query: tuple[str, ...] = (), **kwargs: Any) -> Any:
    message = world.request(["v1", "fuzz"], payload, auth=basic(f"d@{world.a}", "pw"), query=query, **kwargs)
    message.opt.uri_host = None
    return message


async def still_answers(world: World, peer: RawPeer) -> None:
    """A valid confirmable request, sent raw, gets its 2.04: piggybacked on the ACK, or separately
    when it took longer than aiocoap waits to piggyback (the first one of a test checks a password)."""
    mid, token = next_ids()
    peer.send(encode(valid_request(world), mid=mid, token=token))
    reply = await peer.reply_to(token)
    assert reply.code == Code.CHANGED
    assert reply.mtype == Type.CON or reply.mid == mid


# --- hostile datagrams ------------------------------------------------------------------------------


@FUZZ
@given(datagrams=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=8))
async def test_random_datagrams(world: World, peer: RawPeer, prober: RawPeer, datagrams: list[bytes]) -> None:
    with loop_errors() as errors:
        for datagram in datagrams:
            peer.send(datagram)
        await still_answers(world, prober)
    peer.drain()
    assert errors == []


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 400),
    header=st.sampled_from([b"", b"\x40", b"\x50\x02"]),
)
async def test_mutated_requests(world: World, peer: RawPeer, prober: RawPeer, edits: list[tuple[int, int]],
                                cut: int, header: bytes) -> None:
    mid, token = next_ids()
    data = bytearray(encode(valid_request(world, b'{"t":1}', ("ct=0&data_schema=x",), content_format=50),
                            mid=mid, token=token))
    for position, value in edits:
        data[position % len(data)] = value
    mutated = header + bytes(data[: max(cut, 1)])
    with loop_errors() as errors:
        peer.send(mutated)
        await still_answers(world, prober)
    for reply in peer.drain():
        if not isinstance(reply, bytes):
            assert reply.code != Code.INTERNAL_SERVER_ERROR, (mutated, reply)
    assert errors == []


async def test_every_truncation_of_a_request(world: World, peer: RawPeer, prober: RawPeer) -> None:
    mid, token = next_ids()
    data = encode(valid_request(world, b"x" * 40, ("ct=0", "data_schema=urn:x")), mid=mid, token=token)
    with loop_errors() as errors:
        for length in range(len(data)):
            peer.send(data[:length])
        await still_answers(world, prober)
    assert errors == []


#: Option numbers aiocoap knows (and Hawser's): the random ones below stay clear of them, so that
#: the reply can be predicted from the numbers alone.
_KNOWN = frozenset({1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 21, 23, 27, 28, 31, 35, 39, 60,
                    252, 258, 292, 548, AUTH, 4210})


@FUZZ
@given(options=st.lists(st.tuples(st.integers(0, 0xFFFF).filter(lambda n: n not in _KNOWN),
                                  st.binary(max_size=12)), max_size=5))
async def test_unknown_options(world: World, peer: RawPeer, options: list[tuple[int, bytes]]) -> None:
    """Unknown critical options (odd numbers) are 4.02 Bad Option; unknown elective ones are ignored."""
    message = valid_request(world)
    for number, value in options:
        message.opt.add_option(OpaqueOption(number, value))
    mid, token = next_ids()
    peer.send(encode(message, mid=mid, token=token))
    reply = await peer.reply_to(token)
    expected = Code.BAD_OPTION if any(number & 1 for number, _ in options) else Code.CHANGED
    assert reply.code == expected


# --- retransmissions ------------------------------------------------------------------------------


async def events_with(world: World, payload: bytes) -> int:
    """How many events of `a` carry `payload`, up to a marker published now."""
    marker = unique_name("marker").encode()
    assert (await world.post(["v1", "marker"], marker)).code == Code.CHANGED
    before, _ = await world.reader().until(lambda event: event.data == marker)
    return sum(event.data == payload for event in before)


@pytest.mark.parametrize("copies", [2, 3])
async def test_a_retransmitted_con_is_one_event_and_the_same_reply(world: World, peer: RawPeer, copies: int) -> None:
    payload = unique_name("once").encode()
    mid, token = next_ids()
    data = encode(valid_request(world, payload), mid=mid, token=token)
    peer.send(data)
    first = await peer.ack_of(mid)
    for _ in range(copies - 1):
        peer.send(data)
        again = await peer.ack_of(mid)
        assert (again.code, again.token, again.payload) == (first.code, first.token, first.payload)
    # Piggybacked, unless handling took longer than aiocoap waits (then the ACK is empty, and the
    # 2.04 comes on its own, once).
    if first.code == Code.EMPTY:
        assert (await peer.reply_to(token)).code == Code.CHANGED
    else:
        assert first.code == Code.CHANGED
    assert await events_with(world, payload) == 1


async def test_retransmissions_while_the_request_waits_are_one_event(world: World, peer: RawPeer) -> None:
    """Copies arriving while the first is still handled (it waits 1 s for a command) are dropped;
    the device then gets an empty ACK and the 2.04 separately, once."""
    payload = unique_name("waits").encode()
    mid, token = next_ids()
    data = encode(valid_request(world, payload, ("ct=1",)), mid=mid, token=token)
    for _ in range(3):
        peer.send(data)
    reply = await peer.reply_to(token)
    assert (reply.code, reply.mtype) == (Code.CHANGED, Type.CON)
    peer.send(data)  # later still: answered from the cache (the empty ACK), not handled again
    assert await events_with(world, payload) == 1
    codes = [r.code for r in peer.drain() if not isinstance(r, bytes)]
    assert Code.CHANGED not in codes


async def test_a_duplicated_non_is_one_event(world: World, peer: RawPeer) -> None:
    payload = unique_name("non").encode()
    mid, token = next_ids()
    data = encode(valid_request(world, payload), mtype=Type.NON, mid=mid, token=token)
    peer.send(data)
    reply = await peer.reply_to(token)
    assert (reply.code, reply.mtype) == (Code.CHANGED, Type.NON)
    peer.send(data)
    peer.send(data)
    assert await events_with(world, payload) == 1
    # aiocoap drops a duplicate NON without answering it again (its reply was not confirmable either).
    assert [r for r in peer.drain() if not isinstance(r, bytes) and r.token == token] == []


async def test_the_same_message_id_from_another_address_is_another_request(world: World, peer: RawPeer) -> None:
    payload = unique_name("two").encode()
    data = encode(valid_request(world, payload), mid=7, token=b"same")
    async with raw_peer(world.port) as other:
        peer.send(data)
        other.send(data)
        assert (await peer.reply_to(b"same")).code == Code.CHANGED
        assert (await other.reply_to(b"same")).code == Code.CHANGED
    assert await events_with(world, payload) == 2


# --- floods ---------------------------------------------------------------------------------------

FLOOD = 2000
FLOOD_SECONDS = 5.0
WINDOW = 16  # requests in flight per flooding socket (64 in all: well within a socket's buffer)
LEGIT_BOUND_S = 2.0  # below aiocoap's first retransmission (ACK_TIMEOUT 2 s): no request was lost


def flood_requests(world: World) -> Iterator[bytes]:
    """Unauthenticated requests of every kind: no credentials, wrong password, unknown
    application, garbage credentials, block-wise starts without credentials."""
    kinds: list[Callable[[], Any]] = [
        lambda: world.request(["v1", "flood"], b"x"),
        lambda: world.request(["v1", "flood"], b"x", auth=basic(f"d@{world.a}", "guess")),
        lambda: world.request(["v1", "flood"], b"x", auth=basic("d@nowhere", "pw")),
        lambda: world.request(["v1", "flood"], b"x", auth=b"Basic %%%"),
        lambda: world.request(["v1", "flood"], b"y" * 64, options=[OpaqueOption(27, bytes([0x0A]))]),
    ]
    for kind in itertools.cycle(kinds):
        message = kind()
        message.opt.uri_host = None
        mid, token = next_ids()
        yield encode(message, mid=mid, token=token)


async def flood(world: World, sent: list[int], codes: Counter[str], deadline: float) -> None:
    """One socket, closed loop: at most WINDOW unanswered requests (each reply frees a slot, or a
    second without one frees them all, as a lost datagram would)."""
    requests = flood_requests(world)
    async with raw_peer(world.port) as peer:
        while sent[0] < FLOOD and time.monotonic() < deadline:
            for _ in range(WINDOW):
                peer.send(next(requests))
                sent[0] += 1
            for _ in range(WINDOW):
                try:
                    reply = await peer.reply(timeout=1.0)
                except TimeoutError:
                    break
                codes["raw" if isinstance(reply, bytes) else reply.code.dotted] += 1


async def test_a_flood_of_unauthenticated_requests_does_not_stop_a_device(world: World) -> None:
    deadline = time.monotonic() + FLOOD_SECONDS
    sent = [0]
    codes: Counter[str] = Counter()
    floods = [asyncio.create_task(flood(world, sent, codes, deadline)) for _ in range(4)]
    latencies = []
    try:
        while not all(task.done() for task in floods):
            started = time.monotonic()
            response = await world.post(["v1", "legit"], b"ok")
            latencies.append(time.monotonic() - started)
            assert response.code == Code.CHANGED
    finally:
        for task in floods:
            task.cancel()
        results = await asyncio.gather(*floods, return_exceptions=True)
    assert all(result is None for result in results), results
    assert sent[0] >= FLOOD, (sent, codes)
    # 0.00: an empty ACK, when checking a wrong password took longer than aiocoap waits to piggyback.
    assert set(codes) <= {"4.01", "5.03", "0.00"}, codes
    assert len(latencies) >= 5
    assert max(latencies) < LEGIT_BOUND_S, latencies
    assert len(world.endpoint.blocks) == 0
    assert await events_with(world, b"x") == 0

