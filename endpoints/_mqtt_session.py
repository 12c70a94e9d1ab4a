"""One authenticated device connection of the MQTT endpoint, from its CONNACK to its last event: reads
packets, runs publishes through ingest, answers them in order, keeps the command inboxes and is the
`CommandSink` the command registry hands commands to.

Publishes run concurrently, up to the Receive Maximum, as tasks started in arrival order (so the bus
sees them in that order); their PUBACKs go out in the same order (MQTT 5 section 4.6) as the head of
a FIFO completes. While the FIFO is full the socket is not read. Every task belongs to the session:
`run` awaits them (so what a device sent before DISCONNECT still reaches the bus) or, if cancelled,
cancels them. The `connected` event is the FIFO's first entry; `disconnected` follows all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

from prometheus_client import Counter

from auth.devices import AuthOutcome, DeviceAuthenticator, DeviceCredentials
from command.sessions import Command, DeviceSessions, InboxFilter
from endpoints._mqtt_replies import puback_reason
from endpoints._mqtt_topics import match_inbox_filter, publish_uplink
from endpoints.ingest import Ingest
from endpoints.uplink import Uplink
from hawser.errors import HawserError
from hawser.mqtt.errors import ProtocolError
from hawser.mqtt.packets import (
    NO_PROPERTIES,
    Connect,
    Disconnect,
    Properties,
    ProtocolVersion,
    PubAck,
    Publish,
    Reason,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from hawser.mqtt.stream import MqttStream
from hawser.mqtt.topics import check_topic_filter, split_shared

log = logging.getLogger(__name__)

PUBLISHES = Counter("hawser_mqtt_endpoint_publishes", "Device publishes over MQTT, by QoS and outcome.",
                    ["qos", "outcome"])
_ACCEPTED = {qos: PUBLISHES.labels(str(qos), "success") for qos in (0, 1)}
CONNECTION_EVENT_FAILURES = Counter("hawser_mqtt_endpoint_connection_event_failures",
                                    "Connection events the bus did not take.")

#: Topics whose parsed uplink one connection remembers.
UPLINKS = 32
#: Commands waiting to be written to one connection; more are dropped (best effort, as Drogue).
OUTBOX = 16
#: Command inbox filters one connection may hold (a gateway names each device behind it): more are
#: refused with 0x97, so that a client cannot grow the registry, or the cost of each command, at will.
MAX_INBOXES = 256

_Result = tuple[Reason, str | None]


class DeviceSession:
    # Slots: one of these lives per connected device, and tens of thousands may be connected.
    __slots__ = (
        "_authenticator", "_credentials", "_fifo", "_inboxes", "_ingest", "_live", "_outbox", "_outcome", "_room",
        "_sessions", "_stream", "_uplinks", "_version", "_window", "_writer", "client_id", "ended", "taken_over",
    )

    def __init__(
        self,
        stream: MqttStream,
        connect: Connect,
        outcome: AuthOutcome,
        credentials: DeviceCredentials,
        *,
        ingest: Ingest,
        authenticator: DeviceAuthenticator,
        sessions: DeviceSessions,
        window: int,
    ) -> None:
        self._stream = stream
        self._version = connect.protocol_version
        self._outcome = outcome
        self._credentials = credentials
        self._ingest = ingest
        self._authenticator = authenticator
        self._sessions = sessions
        self._window = window
        self._fifo: deque[tuple[int | None, asyncio.Task[_Result]]] = deque()
        self._room: asyncio.Future[None] | None = None
        self._inboxes: dict[str, InboxFilter] = {}
        self._outbox: deque[Publish] | None = None  # made by the first command
        self._writer: asyncio.Task[None] | None = None
        self._uplinks: dict[tuple[str, str | None], Uplink] | None = None  # made by the first publish
        self.client_id = connect.client_id or None  # an empty id is never taken over
        #: Set once the session is over, its disconnected event sent (or given up).
        self.ended = asyncio.Event()
        self.taken_over = False
        self._live = False  # commands go out only after the CONNACK

    # --- CommandSink ------------------------------------------------------------------------------

    @property
    def application(self) -> str:
        return self._outcome.application.name

    @property
    def device(self) -> str:
        return self._outcome.device.name

    def take_over(self) -> None:
        self.taken_over = True
        self._stream.close(Reason.SESSION_TAKEN_OVER, "another connection of this device took over")

    def deliver(self, topic: str, command: Command) -> bool:
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        if not self._live or len(outbox) >= OUTBOX or self._stream.ended_by is not None:
            return False
        properties = NO_PROPERTIES
        if self._version is ProtocolVersion.V5 and command.content_type:
            properties = Properties(content_type=command.content_type)
        outbox.append(Publish(topic, command.payload, qos=0, properties=properties))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_commands(outbox))
        return True

    async def _write_commands(self, outbox: deque[Publish]) -> None:
        try:
            while outbox:
                self._stream.send(outbox.popleft())
                await self._stream.drain()  # a device that does not read fills its outbox: then dropped
        finally:
            self._writer = None

    # --- the connection -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends, then send the disconnected event."""
        stream = self._stream
        self._live = True
        cancelled = False
        try:
            self._start(None, self._connection_event(True))
            while True:
                # Read only with room in the window: a packet read is a packet the state machine
                # counts against the Receive Maximum until it is acknowledged.
                await self._window_room()
                packet = await stream.read_packet()
                if packet is None:
                    break
                if isinstance(packet, Publish):
                    if packet.dup and self._in_flight(packet.packet_id):
                        # A 3.1.1 retransmission of a publish still in flight: the original's PUBACK
                        # answers it. A second PUBACK could acknowledge a later publish reusing the id.
                        continue
                    self._start(packet.packet_id, self._ingest_one(packet))
                elif isinstance(packet, Subscribe):
                    stream.send(self._subscribe(packet))
                elif isinstance(packet, Unsubscribe):
                    stream.send(self._unsubscribe(packet))
                elif isinstance(packet, Disconnect):
                    break
                # Nothing else needs an answer: commands go out at QoS 0 (no PUBACK to expect), and
                # AUTH, PUBREC, PUBREL and PUBCOMP are refused by the state machine.
                await stream.drain()
            await self._settled()
        except asyncio.CancelledError:
            cancelled = True
            await self._cancel_all()
            raise
        except Exception:
            # A bug (the listener logs it): the publishes read so far still end, and the
            # disconnected event below still goes out; nothing of this connection outlives it.
            await self._settled()
            raise
        finally:
            self._live = False
            if self._writer is not None:
                self._writer.cancel()
                await asyncio.gather(self._writer, return_exceptions=True)
            if not cancelled:
                await self._connection_event(False)

    def _start(self, packet_id: int | None, work: Coroutine[Any, Any, _Result]) -> None:
        task: asyncio.Task[_Result] = asyncio.get_running_loop().create_task(work)
        self._fifo.append((packet_id, task))
        task.add_done_callback(self._on_done)

    def _in_flight(self, packet_id: int | None) -> bool:
        return packet_id is not None and any(pending == packet_id for pending, _ in self._fifo)

    async def _window_room(self) -> None:
        """Wait while the window is full (the client waits for PUBACKs) until its head completes."""
        while len(self._fifo) >= self._window:
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None

    async def _ingest_one(self, packet: Publish) -> _Result:
        try:
            uplink, extensions = self._uplink(packet)
            outcome = self._outcome
            if uplink.as_device is not None and uplink.as_device != outcome.device.name:
                # A gateway: its own credentials, re-checked (cached) with the device it publishes for.
                outcome = await self._authenticator.authenticate(self._credentials, uplink.as_device)
            await self._ingest.publish(outcome, uplink, packet.payload, extensions or None)
        except HawserError as error:
            reason = puback_reason(error)
            PUBLISHES.labels(str(packet.qos), reason.name.lower()).inc()
            log.debug("publish of %s on %r refused: %s", self._stream.peer, packet.topic, error.detail)
            return reason, error.detail
        except Exception:
            PUBLISHES.labels(str(packet.qos), "bug").inc()
            log.exception("publish of %s on %r failed", self._stream.peer, packet.topic)
            return Reason.UNSPECIFIED_ERROR, None
        _ACCEPTED[packet.qos].inc()
        return Reason.SUCCESS, None

    def _uplink(self, packet: Publish) -> tuple[Uplink, dict[str, str]]:
        """`publish_uplink`, remembered per topic and content type (devices publish to the same few
        topics again and again) unless user properties make the message one of a kind."""
        properties = packet.properties
        if properties.user_properties:
            return publish_uplink(packet)
        key = (packet.topic, properties.content_type)
        uplinks = self._uplinks
        if uplinks is None:
            uplinks = self._uplinks = {}
        uplink = uplinks.get(key)
        if uplink is None:
            uplink = publish_uplink(packet)[0]  # raises for a bad topic: never remembered
            if len(uplinks) >= UPLINKS:
                uplinks.clear()
            uplinks[key] = uplink
        return uplink, {}

    def _on_done(self, _: asyncio.Task[_Result]) -> None:
        """Acknowledge, in order, every finished publish at the head of the FIFO."""
        fifo = self._fifo
        while fifo and fifo[0][1].done():
            packet_id, task = fifo.popleft()
            if packet_id is not None and not task.cancelled():
                self._acknowledge(packet_id, *task.result())
        room = self._room
        if room is not None and not room.done() and len(fifo) < self._window:
            room.set_result(None)

    def _acknowledge(self, packet_id: int, reason: Reason, detail: str | None) -> None:
        if not reason.is_error:
            self._stream.acknowledge(packet_id)
        elif self._version is ProtocolVersion.V5:
            # A client that asked for no problem information gets none: the state machine strips it.
            properties = Properties(reason_string=detail) if detail else NO_PROPERTIES
            self._stream.send(PubAck(packet_id, reason, properties))
        else:
            # MQTT 3.1.1 has no way to refuse a QoS 1 publish but closing the connection (as Drogue).
            log.debug("closing MQTT 3.1.1 connection of %s: publish refused with %s", self._stream.peer, reason.name)
            self._stream.close()

    async def _settled(self) -> None:
        """Wait for every publish still running (their acks go out if the socket is still open)."""
        while self._fifo:
            await asyncio.gather(*(task for _, task in self._fifo), return_exceptions=True)

    async def _cancel_all(self) -> None:
        tasks = [task for _, task in self._fifo]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection_event(self, connected: bool) -> _Result:
        try:
            await self._ingest.publish_connection(self._outcome, connected)
        except Exception as error:  # the bus is down, or the application was deleted meanwhile
            CONNECTION_EVENT_FAILURES.inc()
            log.warning("connection event (connected=%s) of %s/%s not sent: %s", connected, self.application,
                        self.device, error)
        return Reason.SUCCESS, None

    # --- command inboxes ----------------------------------------------------------------------------

    def _subscribe(self, packet: Subscribe) -> SubAck:
        with_identifier = bool(packet.properties.subscription_identifiers)
        reasons = tuple(self._subscribe_one(r.topic_filter, r.qos, with_identifier) for r in packet.subscriptions)
        return SubAck(packet.packet_id, reasons)

    def _subscribe_one(self, topic_filter: str, qos: int, with_identifier: bool) -> Reason:
        if with_identifier:
            return Reason.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED  # announced in CONNACK, as Drogue
        try:
            check_topic_filter(topic_filter)
        except ProtocolError:
            return Reason.TOPIC_FILTER_INVALID
        if split_shared(topic_filter)[0] is not None:
            return Reason.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
        inbox = match_inbox_filter(topic_filter)
        if inbox is None:
            log.debug("subscription of %s to %r refused", self._stream.peer, topic_filter)
            return Reason.NOT_AUTHORIZED
        if topic_filter not in self._inboxes and len(self._inboxes) >= MAX_INBOXES:
            return Reason.QUOTA_EXCEEDED
        if not self._sessions.subscribe(self, inbox):
            return Reason.UNSPECIFIED_ERROR  # taken over meanwhile: this connection is closing
        self._inboxes[topic_filter] = inbox
        return Reason.GRANTED_QOS_1 if qos >= 1 else Reason.SUCCESS

    def _unsubscribe(self, packet: Unsubscribe) -> UnsubAck:
        reasons = []
        for topic_filter in packet.topic_filters:
            inbox = self._inboxes.pop(topic_filter, None)
            if inbox is None:
                reasons.append(Reason.NO_SUBSCRIPTION_EXISTED)
                continue
            # `command/inbox/#` and `command/inbox/+/#` are the same inbox: keep it while one remains.
            if inbox not in self._inboxes.values():
                self._sessions.unsubscribe(self, inbox)
            reasons.append(Reason.SUCCESS)
        return UnsubAck(packet.packet_id, tuple(reasons))


__all__ = ["DeviceSession"]
