"""One MQTT connection over asyncio, for the device endpoint and the integration alike: a thin
transport around the pure `ServerConnection` that reads packets, writes packets and enforces what
needs a clock or a socket (connect timeout, keep-alive, read and write buffer bounds, shutdown drain).

A service is one coroutine per connection (`Handler`), written top to bottom:

    async def handle(stream: MqttStream) -> None:
        connect = await stream.read_connect()        # None: gone, timed out or garbage (answered)
        ...; stream.refuse(Reason.NOT_AUTHORIZED) and return, or stream.accept(properties)
        while (packet := await stream.read_packet()) is not None:
            ...; stream.send(PubAck(...)); await stream.drain()

Bytes are decoded lazily, in the handler's task, as it asks for packets: what waits undecoded is
bounded by `read_buffer_bytes` (reading pauses beyond it), so a client that sends faster than its
handler acts cannot grow memory. Writes from one loop iteration are coalesced into one `write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import Counter

from hawser.mqtt.connection import ServerConnection, State
from hawser.mqtt.errors import ProtocolError, TooLargeForPeer
from hawser.mqtt.packets import NO_PROPERTIES, Connect, Disconnect, Packet, PingReq, Properties, Reason

log = logging.getLogger(__name__)

PROTOCOL_ERRORS = Counter("hawser_mqtt_protocol_errors", "MQTT connections closed for a protocol error.",
                          ["listener", "reason"])

#: Seconds a closing connection may take to flush what it was sent before it is aborted.
CLOSE_FLUSH_S = 5.0


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds of every connection of one listener."""

    #: Largest packet accepted from a client, fixed header included.
    max_packet_size: int
    #: QoS 1 publishes a client may have in flight (MQTT 5 Receive Maximum).
    receive_maximum: int = 64
    topic_alias_maximum: int = 16
    #: Seconds a socket (and its TLS handshake) gets to deliver its CONNECT.
    connect_timeout_s: float = 10.0
    #: Bytes waiting to be written above which `drain()` waits (a peer that does not read).
    write_buffer_bytes: int = 64 * 1024
    #: Undecoded bytes above which the socket is not read; default `max_packet_size` + 64 KiB.
    read_buffer_bytes: int | None = None

    @property
    def read_limit(self) -> int:
        return self.read_buffer_bytes if self.read_buffer_bytes is not None else self.max_packet_size + 65536


Handler = Callable[["MqttStream"], Awaitable[None]]


class MqttStream(asyncio.Protocol):
    """One accepted socket. Made by `MqttListener`; the handler reads and writes through it."""

    __slots__ = (
        "_closed_waiter",
        "_closing",
        "_drain_waiter",
        "_draining",
        "_eof",
        "_flush_scheduled",
        "_keep_alive_s",
        "_last_read",
        "_limits",
        "_listener",
        "_loop",
        "_lost",
        "_out",
        "_out_bytes",
        "_read_paused",
        "_saw_disconnect",
        "_timer",
        "_transport",
        "_waiter",
        "_write_paused",
        "connection",
        "ended_by",
        "peer",
        "ssl_object",
    )

    def __init__(self, listener: MqttListener, limits: StreamLimits) -> None:
        self._listener = listener
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self.connection = ServerConnection(
            max_packet_size=limits.max_packet_size,
            receive_maximum=limits.receive_maximum,
            topic_alias_maximum=limits.topic_alias_maximum,
        )
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._eof = self._lost = self._closing = self._draining = self._saw_disconnect = False
        self._read_paused = self._write_paused = False
        self._last_read = 0.0
        self._keep_alive_s = 0.0
        #: Why the connection ended: "disconnect", "closed", "keep-alive", "protocol-error", "server",
        #: "connect-timeout"; None while it lasts.
        self.ended_by: str | None = None
        self.peer = "?"
        self.ssl_object: ssl_module.SSLObject | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it: no isinstance check.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=self._limits.write_buffer_bytes)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A client with keep alive 0 (or a half-open connection) would otherwise hold its slot
            # forever: let TCP notice a peer that is gone (after the kernel's keepalive time).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.ssl_object = transport.get_extra_info("ssl_object")
        self._last_read = self._loop.time()
        self._timer = self._loop.call_later(self._limits.connect_timeout_s, self._connect_expired)
        self._listener._started(self)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        if self._closing:
            return
        self.connection.receive_data(data)
        if not self._read_paused and self.connection.buffered > self._limits.read_limit:
            self._read_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close our side too: a half-closed MQTT connection is over

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.ended_by is None:
            self.ended_by = "closed"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()
        for waiter in (self._drain_waiter, self._closed_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._listener._lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- reading -------------------------------------------------------------------------------------

    async def read_connect(self) -> Connect | None:
        """The client's CONNECT; None if the socket closed, timed out or broke the protocol first."""
        packet = await self._next()
        if packet is None:
            return None
        assert isinstance(packet, Connect)  # the state machine accepts nothing else first
        return packet

    async def read_packet(self) -> Packet | None:
        """The next packet the handler must act on; None once the connection is over (or draining)."""
        while not self._saw_disconnect:
            packet = await self._next()
            if packet is None:
                return None
            if isinstance(packet, PingReq):
                # Answered by the state machine (its PINGRESP is written in `_next`); a peer that
                # pings and does not read must stop being read like any other, not fill our buffer.
                await self.drain()
                continue
            if isinstance(packet, Disconnect):
                self._saw_disconnect = True
                self.ended_by = "disconnect"
            return packet
        return None

    async def _next(self) -> Packet | None:
        connection = self.connection
        while True:
            if self._closing or self._draining:
                return None
            try:
                packet = connection.next_packet()
            except ProtocolError as error:
                self._protocol_error(error)
                return None
            pending = connection.data_to_send()
            if pending:
                self._write(pending)
            if packet is not None:
                return packet
            if self._eof or self._lost:
                if self.ended_by is None:
                    self.ended_by = "closed"
                return None
            if self._read_paused and connection.buffered <= self._limits.read_limit:
                self._read_paused = False
                assert self._transport is not None
                self._transport.resume_reading()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _protocol_error(self, error: ProtocolError) -> None:
        PROTOCOL_ERRORS.labels(self._listener.name, error.reason.name.lower()).inc()
        log.debug("%s: %s from %s: %s", self._listener.name, error.reason.name, self.peer, error.detail)
        self.ended_by = "protocol-error"
        self._write(self.connection.error_reply(error))
        self._shut()

    # --- connection decisions ------------------------------------------------------------------------

    def accept(self, properties: Properties = NO_PROPERTIES) -> None:
        """Send the successful CONNACK and start the keep-alive (1.5 times the client's interval)."""
        self._write(self.connection.accept(properties))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        keep_alive = self.connection.keep_alive
        if keep_alive and not self._closing:
            self._keep_alive_s = keep_alive * 1.5
            self._timer = self._loop.call_at(self._last_read + self._keep_alive_s, self._keep_alive_check)

    def refuse(self, reason: Reason, reason_string: str | None = None) -> None:
        """Send a CONNACK refusing the connection (3.1.1: the mapped return code), then close."""
        self.ended_by = "server"
        self._write(self.connection.refuse(reason, reason_string))
        self._shut()

    # --- writing -------------------------------------------------------------------------------------

    def send(self, packet: Packet) -> bool:
        """Queue `packet`; False if nothing was sent (closing, or larger than the peer accepts)."""
        if self._closing or self._lost:
            return False
        try:
            data = self.connection.send(packet)
        except TooLargeForPeer:
            return False
        self._write(data)
        return True

    def acknowledge(self, packet_id: int) -> None:
        """Queue the successful PUBACK of a QoS 1 publish (`send(PubAck(packet_id))`, faster)."""
        if not (self._closing or self._lost):
            self._write(self.connection.acknowledge(packet_id))

    def _write(self, data: bytes) -> None:
        if not data or self._closing or self._lost:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        self._out_bytes = 0
        if out and self._transport is not None and not self._lost:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def drain(self) -> None:
        """Wait while more than `write_buffer_bytes` wait to be written (the peer does not read)."""
        if self._out_bytes > self._limits.write_buffer_bytes:
            self._flush()  # else the flush already scheduled writes it, together with what follows
        while self._write_paused and not self._lost:
            # One future that every waiting coroutine shares (a read loop, flows, a command writer):
            # `resume_writing` and `connection_lost` wake them all. Shielded: one waiter cancelled
            # must not cancel the others' wait.
            waiter = self._drain_waiter
            if waiter is None or waiter.done():
                waiter = self._drain_waiter = self._loop.create_future()
            await asyncio.shield(waiter)

    # --- ending --------------------------------------------------------------------------------------

    def close(self, reason: Reason = Reason.SUCCESS, reason_string: str | None = None) -> None:
        """Tell an MQTT 5 peer why (DISCONNECT) and close; idempotent. A 3.1.1 peer is just closed."""
        if self._closing or self._lost:
            return
        if self.ended_by is None:
            self.ended_by = "server"
        self._write(self.connection.close(reason, reason_string))
        self._shut()

    def _shut(self) -> None:
        """Stop reading, flush what is queued and close; abort if the peer does not take it in time."""
        if self._closing:
            return
        self._closing = True
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is None or self._lost:
            return
        self._flush()
        transport.close()
        if transport.get_write_buffer_size():
            self._loop.call_later(CLOSE_FLUSH_S, transport.abort)

    def drain_for_shutdown(self) -> None:
        """Server shutdown: `read_packet` returns None from now on, so the handler finishes what it
        has in flight (acknowledgements still go out) and returns; the listener then closes."""
        self._draining = True
        if self.ended_by is None:
            self.ended_by = "server"
        self._wake()

    async def wait_closed(self) -> None:
        """Return once the socket is closed (by either side)."""
        if self._lost:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await asyncio.shield(self._closed_waiter)

    # --- timers --------------------------------------------------------------------------------------

    def _connect_expired(self) -> None:
        self._timer = None
        if self.connection.state in (State.AWAITING_CONNECT, State.CONNECTING) and not self._closing:
            self.ended_by = "connect-timeout"
            self._shut()

    def _keep_alive_check(self) -> None:
        deadline = self._last_read + self._keep_alive_s
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._keep_alive_check)
            return
        self._timer = None
        self.ended_by = "keep-alive"
        self.close(Reason.KEEP_ALIVE_TIMEOUT)


class MqttListener:
    """A listening socket whose every connection runs `handler` in a task owned here."""

    def __init__(self, handler: Handler, limits: StreamLimits, name: str) -> None:
        self.name = name
        self.port = 0
        self._handler = handler
        self._limits = limits
        self._server: asyncio.Server | None = None
        self._streams: set[MqttStream] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def _factory(self) -> MqttStream:
        return MqttStream(self, self._limits)

    def _started(self, stream: MqttStream) -> None:
        if self._closing:
            # Accepted before `aclose` and through its TLS handshake only now: nobody would await
            # a handler started after the drain, so the socket is closed instead.
            stream.close(Reason.SERVER_SHUTTING_DOWN)
            return
        self._streams.add(stream)
        task = asyncio.get_running_loop().create_task(self._run(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lost(self, stream: MqttStream) -> None:
        self._streams.discard(stream)

    async def _run(self, stream: MqttStream) -> None:
        reason = Reason.SUCCESS
        try:
            await self._handler(stream)
        except asyncio.CancelledError:
            reason = Reason.SERVER_SHUTTING_DOWN
            raise
        except Exception:
            log.exception("%s: handler failed for %s", self.name, stream.peer)
            reason = Reason.UNSPECIFIED_ERROR
        finally:
            if stream._draining and reason is Reason.SUCCESS:
                reason = Reason.SERVER_SHUTTING_DOWN
            stream.close(reason)

    async def aclose(self, drain_s: float = 10.0) -> None:
        """Stop accepting; let every handler finish what it has in flight (up to `drain_s`), then
        cancel the rest. Connections end with DISCONNECT 0x8B (MQTT 5). Idempotent."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for stream in list(self._streams):
            stream.drain_for_shutdown()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=drain_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%s: %d connections did not finish in %s s; cancelled", self.name, len(pending), drain_s)
                await asyncio.wait(pending, timeout=5)
        if self._server is not None:
            server, self._server = self._server, None
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except TimeoutError:
                log.warning("%s: listener did not close in time", self.name)

    async def __aenter__(self) -> MqttListener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def start_listener(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: StreamLimits,
    ssl: ssl_module.SSLContext | None = None,
    name: str,
) -> MqttListener:
    """Listen on `host:port` (0: any free port, then `listener.port`) and serve each connection
    with `handler`. Returns once bound."""
    listener = MqttListener(handler, limits, name)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        listener._factory, host, port, ssl=ssl, backlog=4096, reuse_address=True,
        ssl_handshake_timeout=limits.connect_timeout_s if ssl is not None else None,
    )
    listener._server = server
    listener.port = server.sockets[0].getsockname()[1]
    return listener


__all__ = ["Handler", "MqttListener", "MqttStream", "StreamLimits", "start_listener"]
