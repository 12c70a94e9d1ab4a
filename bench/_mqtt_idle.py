"""Idle MQTT connections for bench/mqtt_connections.py: worker processes that each open their share
of raw asyncio sockets, send one pre-built CONNECT, read the CONNACK, then hold the connection open
without sending anything until told to let go.

Cheap on purpose (no client library, no per-connection task): the bench measures the server's
memory, and a client process can hold about as many sockets as its open-files limit allows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing as mp
import queue as queue_module
import socket
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, cast

import _harness as h
import _mqtt_wire as wire
import uvloop


@dataclass(frozen=True)
class Plan:
    """Connection `n` uses client id `f"{prefix}{n}"` and the source address `source_ips[n // per_ip]`."""

    port: int
    prefix: str
    username: str
    password: str
    source_ips: tuple[str, ...]
    per_ip: int
    keep_alive: int = 3600


class _Idle(asyncio.Protocol):
    def __init__(self, packet: bytes) -> None:
        self.packet = packet
        self.frames = wire.Frames()
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True
        self.transport.write(self.packet)

    def data_received(self, data: bytes) -> None:
        for kind, body in self.frames.feed(data):
            if kind == wire.CONNACK and not self.connack.done():
                self.connack.set_result(wire.connack_code(body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.connack.done():
            self.connack.set_result(-1)


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux >= 4.2


async def _connected_socket(loop: asyncio.AbstractEventLoop, source: str, port: int) -> socket.socket:
    """A TCP socket from `source` connected to 127.0.0.1:`port`. The source port is left to connect(),
    which only needs it unique per destination; bind() with port 0 would look for a port free of any
    socket, a search that slows down with every connection held."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source != "127.0.0.1":
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _hold(plan: Plan, indexes: range, concurrency: int, ready: Queue[Any], release: Event) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    codes: collections.Counter[str] = collections.Counter()
    held: list[_Idle] = []

    async def open_one(n: int) -> None:
        packet = wire.connect(f"{plan.prefix}{n}", plan.username, plan.password, keep_alive=plan.keep_alive)
        async with gate:
            try:
                sock = await _connected_socket(loop, plan.source_ips[n // plan.per_ip], plan.port)
                _, idle = await loop.create_connection(lambda: _Idle(packet), sock=sock)
                code = await asyncio.wait_for(idle.connack, 60)
            except (OSError, TimeoutError) as exc:
                codes[type(exc).__name__ + (f" {exc.errno}" if isinstance(exc, OSError) else "")] += 1
                return
        codes["accepted" if code == 0 else "closed" if code < 0 else f"refused 0x{code:02x}"] += 1
        if code == 0:
            held.append(idle)

    await asyncio.gather(*(open_one(n) for n in indexes))
    ready.put(dict(codes))
    if not await asyncio.to_thread(release.wait, 3600):
        raise RuntimeError("never released")
    still_open = sum(1 for idle in held if idle.open)
    for idle in held:
        if idle.transport is not None:
            idle.transport.write(wire.DISCONNECT_PACKET)
            idle.transport.close()
    ready.put({"still open": still_open})


def _worker(*args: Any) -> None:
    h.raise_nofile()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_hold(*args))


class IdleConnections:
    """`open()` starts the workers and returns once every connection got its CONNACK (or failed),
    with a count per outcome; `close()` lets them go and says how many were still open."""

    def __init__(self, plan: Plan, count: int, *, per_process: int, concurrency: int = 64) -> None:
        ctx = mp.get_context("spawn")
        self.ready: Queue[Any] = ctx.Queue()
        self.release = ctx.Event()
        self.workers = [
            ctx.Process(target=_worker, daemon=True,
                        args=(plan, range(start, min(start + per_process, count)), concurrency, self.ready,
                              self.release))
            for start in range(0, count, per_process)
        ]

    def _collect(self, timeout: float) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        deadline = time.monotonic() + timeout
        pending = len(self.workers)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"idle-connection workers did not answer within {timeout}s")
            with contextlib.suppress(queue_module.Empty):
                total.update(self.ready.get(timeout=0.5))
                pending -= 1
                continue
            if any(w.exitcode not in (None, 0) for w in self.workers):
                raise RuntimeError("an idle-connection worker failed (its traceback is above)")
        return total

    def open(self, timeout: float = 600) -> collections.Counter[str]:
        for worker in self.workers:
            worker.start()
        return self._collect(timeout)

    def close(self) -> int:
        self.release.set()
        try:
            return self._collect(120)["still open"]
        finally:
            for worker in self.workers:
                worker.join(30)
                if worker.is_alive():
                    worker.terminate()
