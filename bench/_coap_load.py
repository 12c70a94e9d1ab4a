"""The CoAP publish load generator: confirmable POSTs over raw UDP from worker processes.

An aiocoap client spends far more per request than a server does, so each client here is one UDP
socket (its own source port, as a device) sending requests encoded once by aiocoap, patched only in
their message id and token, with a fixed window of requests in flight keyed by token; every 2.04
sends the next one (closed loop). A request unanswered for ACK_TIMEOUT is retransmitted with the same
message id (the server must deduplicate it), up to MAX_RETRANSMIT times, then counted as lost.
Message ids never repeat towards a server within its EXCHANGE_LIFETIME (247 s), or it would answer
from its deduplication cache without publishing: each client sends at most 65,535 requests, and
every client of a bench gets a source port of its own (below the kernel's ephemeral range, which
would hand a later run's socket a port an earlier run used).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from array import array
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, cast

import aiocoap
import aiocoap.optiontypes
import uvloop
from _harness import get_from_workers, own_cpu

PAYLOAD = b'{"temp":21.5,"hum":40,"seq":1234567,"ok":1}'  # the MQTT bench's document
JSON_FORMAT = 50  # application/json
AUTH_OPTION = 4209  # Drogue's credentials option
ACK_TIMEOUT = 2.0  # seconds; RFC 7252's ACK_TIMEOUT, doubled per retransmission
MAX_RETRANSMIT = 2
SEPARATE_TIMEOUT = 10.0  # seconds to wait for a separate response after an empty ACK
CHANGED = 0x44  # 2.04
CON, NON, ACK, RST = 0, 1, 2, 3
#: Source ports handed out to clients, one each, never twice in a process (see the docstring).
FIRST_PORT, LAST_PORT = 20_000, 32_767
_next_port = FIRST_PORT


@dataclass(frozen=True)
class LoadResult:
    seconds: float  # from the start signal to the last reply (or the time limit)
    requests: int  # distinct requests sent (retransmissions not counted)
    changed: int  # 2.04 replies
    codes: dict[str, int]  # other reply codes ("4.01", "RST", ...) -> count
    lost: int  # requests still unanswered after every retransmission
    retransmissions: int
    separate: int  # responses that came separately, after an empty ACK (the server took > 0.1 s or so)
    unfinished: int  # requests never sent because the time limit ended the run
    latencies_ms: list[float]  # per 2.04, from the first transmission
    generator_cpu_s: float

    @property
    def rate(self) -> float:
        return self.changed / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def encode_request(authorization: str, path: str = "v1/telemetry") -> tuple[bytes, bytes]:
    """A confirmable POST with a 2-byte token, encoded once by aiocoap: the bytes before the message
    id and those after the token (the per-request message id and token go in between)."""
    message = aiocoap.Message(mtype=aiocoap.CON, code=aiocoap.POST, mid=0, token=b"\0\0", payload=PAYLOAD,
                              uri_path=path.split("/"), content_format=JSON_FORMAT)
    message.opt.add_option(aiocoap.optiontypes.StringOption(AUTH_OPTION, authorization))
    encoded: bytes = message.encode()
    assert encoded[0] & 0x0F == 2, "token length"
    return encoded[:2], encoded[6:]


class _Client(asyncio.DatagramProtocol):
    def __init__(self, head: bytes, tail: bytes, count: int, window: int, latencies: array[float]) -> None:
        self.head, self.tail = head, tail
        self.count, self.window = count, window
        self.latencies = latencies
        self.transport: asyncio.DatagramTransport | None = None
        self.next_id = 1
        # token (= message id) -> [first send time, current deadline, retransmissions so far, empty-ACKed]
        self.outstanding: dict[int, list[Any]] = {}
        self.changed = self.lost = self.retransmissions = self.separate = 0
        self.last_reply = 0.0
        self.codes: dict[str, int] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def _packet(self, ident: int) -> bytes:
        two = ident.to_bytes(2, "big")
        return self.head + two + two + self.tail

    def _send_next(self, now: float) -> None:
        if self.next_id > self.count:
            if not self.outstanding and not self.done.done():
                self.done.set_result(None)
            return
        ident, self.next_id = self.next_id, self.next_id + 1
        self.outstanding[ident] = [now, now + ACK_TIMEOUT, 0, False]
        assert self.transport is not None
        self.transport.sendto(self._packet(ident))

    def start(self) -> None:
        now = time.perf_counter()
        for _ in range(min(self.window, self.count)):
            self._send_next(now)

    def stop(self) -> None:
        """The time limit: send nothing more."""
        self.count = self.next_id - 1
        if not self.outstanding and not self.done.done():
            self.done.set_result(None)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4:
            return
        kind, token_length, code = (data[0] >> 4) & 3, data[0] & 0x0F, data[1]
        if kind == CON:  # a separate response: acknowledge it whatever it answers
            assert self.transport is not None
            self.transport.sendto(bytes((0x60, 0)) + data[2:4])
        if kind == ACK and code == 0:  # empty ACK: the response comes separately
            entry = self.outstanding.get(int.from_bytes(data[2:4], "big"))
            if entry is not None and not entry[3]:
                entry[1], entry[3] = time.perf_counter() + SEPARATE_TIMEOUT, True
                self.separate += 1
            return
        if kind == RST:
            entry = self.outstanding.pop(int.from_bytes(data[2:4], "big"), None)
            if entry is not None:
                self.codes["RST"] = self.codes.get("RST", 0) + 1
                self._send_next(time.perf_counter())
            return
        if token_length != 2:
            return
        entry = self.outstanding.pop(int.from_bytes(data[4:6], "big"), None)
        if entry is None:  # a duplicate reply (to a retransmission)
            return
        now = self.last_reply = time.perf_counter()
        if code == CHANGED:
            self.changed += 1
            self.latencies.append((now - entry[0]) * 1000)
        else:
            name = f"{code >> 5}.{code & 0x1F:02d}"
            self.codes[name] = self.codes.get(name, 0) + 1
        self._send_next(now)

    def check_timeouts(self, now: float) -> None:
        for ident, entry in list(self.outstanding.items()):
            if entry[1] > now:
                continue
            if entry[3] or entry[2] >= MAX_RETRANSMIT:
                del self.outstanding[ident]
                self.lost += 1
                self._send_next(now)
                continue
            entry[2] += 1
            entry[1] = now + ACK_TIMEOUT * 2 ** entry[2]
            self.retransmissions += 1
            assert self.transport is not None
            self.transport.sendto(self._packet(ident))


async def _run(port: int, authorizations: list[str], counts: list[int], source_ports: range, window: int,
               time_limit: float, ready: Queue[Any], go: Event, results: Queue[Any]) -> None:
    loop = asyncio.get_running_loop()
    latencies: array[float] = array("d")
    templates: dict[str, tuple[bytes, bytes]] = {}
    clients: list[_Client] = []
    sources = iter(source_ports)
    for authorization, count in zip(authorizations, counts, strict=True):
        if authorization not in templates:
            templates[authorization] = encode_request(authorization)
        head, tail = templates[authorization]
        for source in sources:  # a port some other program holds is skipped
            with contextlib.suppress(OSError):
                _, client = await loop.create_datagram_endpoint(
                    lambda h=head, t=tail, c=count: _Client(h, t, c, window, latencies),  # type: ignore[misc]
                    local_addr=("127.0.0.1", source), remote_addr=("127.0.0.1", port))
                break
        else:
            raise RuntimeError(f"no free source port left in {source_ports}")
        clients.append(client)
    ready.put(len(clients))
    if not await asyncio.to_thread(go.wait, 120):
        raise RuntimeError("no start signal")
    cpu_before = own_cpu()
    started = time.perf_counter()
    for client in clients:
        client.start()
    all_done = asyncio.gather(*(c.done for c in clients))
    deadline = started + time_limit
    while not all_done.done():
        now = time.perf_counter()
        if now >= deadline:
            for client in clients:
                client.stop()
        for client in clients:
            client.check_timeouts(now)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(all_done), 0.1)
        if time.perf_counter() > deadline + ACK_TIMEOUT * 2 ** (MAX_RETRANSMIT + 1) + SEPARATE_TIMEOUT:
            break  # bounded even if a reply never comes: what is still outstanding counts as lost
    # Up to the last reply, not to when this loop noticed it (up to 0.1 s later).
    elapsed = max([c.last_reply for c in clients] + [started + 1e-9]) - started
    cpu = own_cpu() - cpu_before
    codes: dict[str, int] = {}
    for client in clients:
        for name, n in client.codes.items():
            codes[name] = codes.get(name, 0) + n
        if client.transport is not None:
            client.transport.close()
    all_done.cancel()
    results.put({
        "seconds": elapsed, "requests": sum(c.next_id - 1 for c in clients),
        "changed": sum(c.changed for c in clients), "codes": codes,
        "lost": sum(c.lost + len(c.outstanding) for c in clients),
        "retransmissions": sum(c.retransmissions for c in clients),
        "separate": sum(c.separate for c in clients),
        "unfinished": sum(n for n in counts) - sum(c.next_id - 1 for c in clients),
        "latencies": latencies.tolist(), "cpu": cpu,
    })



def _worker(*args: Any) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run(*args))



def run_load(port: int, authorizations: list[str], *, messages: int, window: int, time_limit: float,
             processes: int, on_start: Any = None) -> LoadResult:
    """Send `messages` POSTs in all from one client per entry of `authorizations` (option 4209
    values; split over `processes` workers), or stop at `time_limit` seconds; blocks until done.
    `on_start()` is called just before the start signal, once every socket is open."""
    share, extra = divmod(messages, len(authorizations))
    counts = [share + (1 if n < extra else 0) for n in range(len(authorizations))]
    if max(counts) > 0xFFFF:
        raise ValueError("more than 65,535 requests per client would reuse message ids: add clients")
    global _next_port
    span = 2 * len(authorizations)  # room for ports found taken
    if _next_port + span > LAST_PORT:
        raise RuntimeError("source ports used up: fewer runs or fewer clients per bench")
    first, _next_port = _next_port, _next_port + span
    blocks = [range(first + i * span // processes, first + (i + 1) * span // processes) for i in range(processes)]
    ctx = mp.get_context("spawn")
    ready: Queue[Any] = ctx.Queue()
    results: Queue[Any] = ctx.Queue()
    go = ctx.Event()
    workers = [
        ctx.Process(target=_worker, args=(port, authorizations[i::processes], counts[i::processes], blocks[i],
                                          window, time_limit, ready, go, results), daemon=True)
        for i in range(min(processes, len(authorizations)))
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            get_from_workers(ready, workers, 120)
        if on_start is not None:
            on_start()
        go.set()
        parts = [get_from_workers(results, workers, time_limit + 90) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.terminate()
    codes: dict[str, int] = {}
    for part in parts:
        for name, n in part["codes"].items():
            codes[name] = codes.get(name, 0) + n
    return LoadResult(
        seconds=max(p["seconds"] for p in parts), requests=sum(p["requests"] for p in parts),
        changed=sum(p["changed"] for p in parts), codes=codes, lost=sum(p["lost"] for p in parts),
        retransmissions=sum(p["retransmissions"] for p in parts), separate=sum(p["separate"] for p in parts),
        unfinished=sum(p["unfinished"] for p in parts),
        latencies_ms=[x for p in parts for x in p["latencies"]], generator_cpu_s=sum(p["cpu"] for p in parts),
    )
