"""One granted subscription of the MQTT integration: a bus subscription, a pump from it into a buffer
bounded in events and bytes, a forwarder from the buffer to the connection, and (for a shared
subscription, i.e. a consumer group) a committer.

QoS 1 is at-least-once from the bus: at most `inflight` events of a subscription (and the client's
Receive Maximum over the connection) wait for their PUBACK, and the group offset advances only over
acknowledged events, contiguously per partition (`AckTracker`). QoS 0 and events too large for the
client's Maximum Packet Size (skipped and counted, as MQTT 5 says) count as done once written.
Whatever was not done when the flow ends is read again by the group. A client that stops reading
stops the forwarder (`drain`), which fills the buffer, which stops the pump: the bus keeps the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from prometheus_client import Counter, Gauge

from hawser.bus import Subscription
from hawser.errors import HawserError, UnknownTopic
from hawser.mqtt.packets import Reason
from hawser.mqtt.stream import MqttStream
from integration._buffer import DeliveryBuffer
from integration._mqtt_acks import AckTracker
from integration._mqtt_events import ContentMode, event_publish
from integration._mqtt_topics import AppFilter

log = logging.getLogger("integration.mqtt")

#: How long the last commit (and leaving the group) of an ending subscription may take; past it the
#: group reads those events again.
FINAL_COMMIT_S = 5.0

SUBSCRIPTIONS = Gauge("hawser_mqtt_integration_subscriptions", "Open MQTT integration subscriptions")
EVENTS_SENT = Counter("hawser_mqtt_integration_events_sent", "Events sent to MQTT integration clients")
EVENTS_TOO_LARGE = Counter("hawser_mqtt_integration_events_too_large",
                           "Events skipped because they exceed the client's Maximum Packet Size")
DROPPED_MOVED = Counter("hawser_mqtt_integration_events_dropped_moved",
                        "Read-ahead events not sent because their partition moved to another member")

#: What ends the whole connection: a reason code and a reason string for the DISCONNECT.
Failure = Callable[[Reason, str], None]


class Window:
    """A count of slots (events in flight); `take` waits for a free one."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a window needs at least one slot")
        self.capacity = capacity
        self.used = 0
        self._freed = anyio.Event()

    async def take(self) -> None:
        while self.used >= self.capacity:
            await self._freed.wait()
        self.used += 1

    def give(self) -> None:
        self.used -= 1
        self._freed.set()
        self._freed = anyio.Event()


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """What was granted: which application, at which QoS, in which content mode."""

    app: AppFilter
    qos: int
    mode: ContentMode
    subscription_ids: tuple[int, ...]
    #: The application's uid at authorization: an event of another uid means it was deleted since.
    application_uid: str


class Flow:
    def __init__(
        self, stream: MqttStream, subscription: Subscription, spec: FlowSpec, *, shared: Window,
        inflight: int, buffer: DeliveryBuffer, owners: dict[int, Flow], on_failure: Failure,
    ) -> None:
        self.spec = spec
        self._stream = stream
        self._subscription = subscription
        self._shared = shared
        self._window = Window(inflight)
        self._buffer = buffer
        self._owners = owners
        self._on_failure = on_failure
        self._committing = spec.app.share is not None
        self._tracker = AckTracker(committing=self._committing)
        #: Packet ids sent and not acknowledged: they hold a slot of the connection's window until the
        #: client acknowledges them, even after this flow ended (its Receive Maximum counts them).
        self._unacked: set[int] = set()
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()  # something became committable
        self._closed = False
        SUBSCRIPTIONS.inc()

    def stop(self) -> None:
        """End the flow (UNSUBSCRIBE, or the connection ends); `run` commits and leaves."""
        self._scope.cancel()

    def acked(self, packet_id: int) -> None:
        """The client acknowledged a QoS 1 event of this flow."""
        if packet_id in self._unacked:
            self._unacked.discard(packet_id)
            self._shared.give()
        if self._tracker.acked(packet_id):
            self._window.give()
            self._done.set()

    async def run(self) -> None:
        try:
            with self._scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._pump, name="mqtt-integration-pump")
                    if self._committing:
                        tasks.start_soon(self._commit_loop, name="mqtt-integration-commit")
                    await self._forward()
                    tasks.cancel_scope.cancel()
        except Exception:  # a bug: end this connection, not the server
            log.exception("MQTT integration: delivery to %s failed", self._stream.peer)
            self._on_failure(Reason.UNSPECIFIED_ERROR, "internal error")
        finally:
            await self.discard()

    async def discard(self) -> None:
        """Commit what is done and leave the bus, each within `FINAL_COMMIT_S` even when cancelled.
        Idempotent; also what a subscription that never ran needs."""
        self._scope.cancel()
        if self._closed:
            return
        self._closed = True
        with anyio.move_on_after(FINAL_COMMIT_S, shield=True):
            await self._commit_done()
        self._tracker.abandon()  # what was not acknowledged by now is the group's to read again
        try:
            with anyio.move_on_after(FINAL_COMMIT_S, shield=True) as leaving:
                await self._subscription.aclose()
            if leaving.cancelled_caught:
                log.warning("MQTT integration: leaving the bus took over %.0f s; given up", FINAL_COMMIT_S)
        finally:
            SUBSCRIPTIONS.dec()

    async def _pump(self) -> None:
        """From the bus into the buffer; ends the connection when the bus cannot go on."""
        failure: tuple[Reason, str] | None = None
        try:
            async for delivery in self._subscription:
                if delivery.event.attributes.get("applicationuid") != self.spec.application_uid:
                    # Deleted and created again under the same name: not what was authorized.
                    log.warning("MQTT integration: an event of another %s; disconnecting %s",
                                self.spec.app.application, self._stream.peer)
                    failure = (Reason.NOT_AUTHORIZED, "application deleted")
                    return
                await self._buffer.put(delivery)
            failure = (Reason.SERVER_SHUTTING_DOWN, "event bus closed")
        except UnknownTopic:
            failure = (Reason.NOT_AUTHORIZED, "application deleted")
        except HawserError as error:
            log.warning("MQTT integration: event bus failed: %s", error.detail)
            failure = (Reason.UNSPECIFIED_ERROR, "event bus unavailable")
        finally:
            self._buffer.close()
            if failure is not None:
                self._on_failure(*failure)
                self._scope.cancel()

    async def _forward(self) -> None:
        """From the buffer to the client until the buffer ends or the connection closes."""
        stream, spec = self._stream, self.spec
        version = stream.connection.version
        assert version is not None, "a flow runs on a connected stream"
        while (delivery := await self._buffer.get()) is not None:
            if not self._subscription.holds(delivery.topic, delivery.partition):
                DROPPED_MOVED.inc()
                continue
            packet_id: int | None = None
            if spec.qos:
                await self._window.take()
                try:
                    await self._shared.take()
                except BaseException:
                    self._window.give()
                    raise
                if not self._subscription.holds(delivery.topic, delivery.partition):
                    self._window.give()  # moved while waiting for the client
                    self._shared.give()
                    DROPPED_MOVED.inc()
                    continue
                packet_id = stream.connection.next_packet_id()
            publish = event_publish(delivery.event, topic=spec.app.topic, version=version, mode=spec.mode,
                                    qos=spec.qos, packet_id=packet_id, subscription_ids=spec.subscription_ids)
            if stream.send(publish):
                EVENTS_SENT.inc()
                if packet_id is not None:
                    self._tracker.sent(delivery, packet_id)
                    self._unacked.add(packet_id)
                    self._owners[packet_id] = self
                else:
                    self._tracker.sent(delivery)
            else:
                if packet_id is not None:
                    self._window.give()
                    self._shared.give()
                if stream.ended_by is not None:
                    return  # the connection is gone: nothing more is sent, nothing of it committed
                # Larger than the client accepts: MQTT 5 says to act as if it was delivered.
                EVENTS_TOO_LARGE.inc()
                self._tracker.sent(delivery)
            self._done.set()
            await stream.drain()

    async def _commit_loop(self) -> None:
        """Commit what became done, coalescing: while one commit runs, more acknowledgements gather."""
        while True:
            await self._done.wait()
            self._done = anyio.Event()
            # Shielded (bounded): a commit cut in half would leave acknowledged events uncommitted.
            with anyio.move_on_after(FINAL_COMMIT_S, shield=True):
                await self._commit_done()

    async def _commit_done(self) -> None:
        """Commit the last done delivery of each partition. A failed commit only means some events
        may be delivered to the group again, so it is logged, not fatal."""
        for delivery in self._tracker.take_commits():
            try:
                await self._subscription.commit(delivery)
            except HawserError as error:
                log.warning("MQTT integration: commit failed (events may be delivered again): %s",
                            error.detail)


__all__ = ["FINAL_COMMIT_S", "Flow", "FlowSpec", "Window"]
