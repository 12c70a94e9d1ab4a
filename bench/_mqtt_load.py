"""The MQTT publish load generator: raw pipelined QoS 1 publishers in worker processes.

A Python MQTT client library spends tens of microseconds per message and would measure itself
rather than the broker, so each connection here writes pre-encoded 3.1.1 PUBLISH packets with a
fixed window of packet ids in flight, and answers every PUBACK by re-sending the packet with the
same id (closed loop, one write per read). Workers connect first, then all start on one signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, cast

import _mqtt_wire as wire
import uvloop
from _harness import get_from_workers, own_cpu

PAYLOAD = b'{"temp":21.5,"hum":40,"seq":1234567,"ok":1}'  # ~40 bytes of JSON


@dataclass(frozen=True)
class Client:
    client_id: str
    username: str = ""
    password: str = ""
    topic: str = "telemetry"


@dataclass(frozen=True)
class LoadResult:
    seconds: float
    sent: int
    acked: int
    acked_in_window: int
    failed_connections: int
    connect_failures: dict[str, int]  # outcome -> count
    refused: int  # PUBACKs with an error reason, or connections closed by the broker mid-run
    generator_cpu_s: float

    @property
    def rate(self) -> float:
        return self.acked_in_window / self.seconds


class _Publisher(asyncio.Protocol):
    def __init__(self, client: Client, window: int) -> None:
        self.connect_packet = wire.connect(client.client_id, client.username, client.password, keep_alive=600)
        self.packets = [b""] + [wire.publish_qos1(client.topic, pid, PAYLOAD) for pid in range(1, window + 1)]
        self.window = window
        self.connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Done once sending stopped and every publish sent got its PUBACK (or the socket closed).
        self.drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames = wire.Frames()
        self.transport: asyncio.Transport | None = None
        self.sending = False
        self.sent = self.acked = self.refused = 0
        self.outstanding = bytearray(window + 1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.connect_packet)

    def start(self) -> None:
        assert self.transport is not None
        self.sending = True
        self.outstanding[1:] = b"\x01" * self.window
        self.sent += self.window
        self.transport.write(b"".join(self.packets[1:]))

    def data_received(self, data: bytes) -> None:
        if self.connected.done() and not self.frames.pending and len(data) % 4 == 0:
            # The common case: nothing but 4-byte 3.1.1 PUBACKs; unpack them all at C speed.
            words = struct.unpack(f">{len(data) // 2}H", data)
            if words[0::2].count(0x4002) * 2 == len(words):
                self._acked(words[1::2])
                return
        ids: list[int] = []
        for kind, body in self.frames.feed(data):
            if kind == wire.CONNACK and not self.connected.done():
                self.connected.set_result(wire.connack_code(body))
            elif kind == wire.PUBACK:
                if len(body) > 2 and body[2] >= 0x80:
                    self.refused += 1
                ids.append(int.from_bytes(body[:2], "big"))
        if ids:
            self._acked(ids)

    def _acked(self, acked: Sequence[int]) -> None:
        outstanding = self.outstanding
        ids = []
        for pid in acked:
            if 0 < pid <= self.window and outstanding[pid]:
                outstanding[pid] = 0
                ids.append(pid)
            else:  # a PUBACK for nothing in flight: a server bug, reported as a refusal
                self.refused += 1
        self.acked += len(ids)
        if not self.sending:
            if self.acked == self.sent and not self.drained.done():
                self.drained.set_result(None)
            return
        for pid in ids:
            outstanding[pid] = 1
        self.sent += len(ids)
        assert self.transport is not None
        self.transport.write(b"".join([self.packets[pid] for pid in ids]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_result(-1)
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.drained.done():
            self.drained.set_result(None)

    def stop(self) -> None:
        self.sending = False
        if self.acked == self.sent and not self.drained.done():
            self.drained.set_result(None)


async def _run(host: str, port: int, clients: list[Client], window: int, seconds: float, ready: Queue[Any],
               go: Event, results: Queue[Any]) -> None:
    loop = asyncio.get_running_loop()
    publishers: list[_Publisher] = []
    failures: dict[str, int] = {}
    for client in clients:
        try:
            _, publisher = await loop.create_connection(lambda c=client: _Publisher(c, window), host, port)  # type: ignore[misc]
            code = await asyncio.wait_for(publisher.connected, 10)
        except (OSError, TimeoutError) as exc:
            failures[repr(exc)] = failures.get(repr(exc), 0) + 1
            continue
        if code != 0:
            outcome = "closed before CONNACK" if code < 0 else f"CONNACK 0x{code:02x}"
            failures[outcome] = failures.get(outcome, 0) + 1
            continue
        publishers.append(publisher)
    ready.put((len(publishers), failures))
    if not await asyncio.to_thread(go.wait, 120):
        raise RuntimeError("no start signal")
    cpu_before = own_cpu()
    started = time.perf_counter()
    for publisher in publishers:
        publisher.start()
    await asyncio.sleep(seconds)
    for publisher in publishers:
        publisher.stop()
    acked_in_window = sum(p.acked for p in publishers)
    elapsed = time.perf_counter() - started
    # Drain: every publish sent must get its PUBACK (bounded wait; missing ones are reported).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(p.drained for p in publishers)), 30)
    cpu = own_cpu() - cpu_before
    broken = sum(1 for p in publishers if p.closed.done())
    for publisher in publishers:
        if publisher.transport is not None:
            publisher.transport.write(wire.DISCONNECT_PACKET)
            publisher.transport.close()
    results.put({
        "seconds": elapsed, "sent": sum(p.sent for p in publishers), "acked": sum(p.acked for p in publishers),
        "acked_in_window": acked_in_window,
        "refused": sum(p.refused for p in publishers) + broken, "cpu": cpu,
    })



def _worker(*args: Any) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run(*args))



def run_load(port: int, clients: list[Client], *, window: int, seconds: float, processes: int,
             on_start: Any = None) -> LoadResult:
    """Publish from `clients` (split over `processes` workers) for `seconds`; blocks until done.
    `on_start()` is called just before the start signal, once every connection is up."""
    ctx = mp.get_context("spawn")
    ready: Queue[Any] = ctx.Queue()
    results: Queue[Any] = ctx.Queue()
    go = ctx.Event()
    shares = [clients[i::processes] for i in range(processes)]
    workers = [ctx.Process(target=_worker, args=("127.0.0.1", port, share, window, seconds, ready, go, results),
                           daemon=True) for share in shares if share]
    for worker in workers:
        worker.start()
    try:
        connected, failures = 0, dict[str, int]()
        for _ in workers:
            count, failed = get_from_workers(ready, workers, 120)
            connected += count
            for outcome, n in failed.items():
                failures[outcome] = failures.get(outcome, 0) + n
        if on_start is not None:
            on_start()
        go.set()
        parts = [get_from_workers(results, workers, seconds + 90) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.terminate()
    return LoadResult(
        seconds=max(p["seconds"] for p in parts), sent=sum(p["sent"] for p in parts),
        acked=sum(p["acked"] for p in parts), acked_in_window=sum(p["acked_in_window"] for p in parts),
        failed_connections=len(clients) - connected, connect_failures=failures,
        refused=sum(p["refused"] for p in parts),
        generator_cpu_s=sum(p["cpu"] for p in parts),
    )
