"""The MQTT integration (1884, TLS 8884): applications read their events over MQTT 3.1.1 or 5.

A connection authenticates as Drogue's integration allows (`_mqtt_credentials`), then subscribes to
`app/<app>` or `$share/<group>/app/<app>` (`_mqtt_topics`); each granted filter is one bus
subscription, opened before the SUBACK so that everything sent after it arrives, and delivered by a
`Flow` (`_mqtt_flow`: QoS 1 is at-least-once, the group offset advancing only over PUBACKed events).
Only members (reader role or above, within the token's scopes) may subscribe; an unknown application
is refused like a forbidden one. Publishing commands (`command/<app>/<device>/<command>`) comes with
the commands issue; until then it is refused. The connection ends with DISCONNECT 0x87 when an
application is deleted under a subscription, 0x80 when the bus fails.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskGroup
from prometheus_client import Counter, Gauge

from hawser.access import Principal, UserAuthenticator
from hawser.bus import EventBus, Subscription
from hawser.config import MqttIntegrationSettings
from hawser.errors import (
    AuthenticationError,
    BadCredentials,
    BadRequest,
    BusUnavailable,
    Forbidden,
    HawserError,
    NotFound,
    Overloaded,
)
from hawser.events import events_topic
from hawser.mqtt.packets import (
    Connect,
    Disconnect,
    Properties,
    ProtocolVersion,
    PubAck,
    Publish,
    Reason,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
)
from hawser.mqtt.stream import MqttStream, StreamLimits
from integration._access import Memberships, authorize_reader
from integration._buffer import DeliveryBuffer
from integration._mqtt_credentials import credential_of
from integration._mqtt_events import ContentMode, content_mode
from integration._mqtt_flow import Flow, FlowSpec, Window
from integration._mqtt_topics import match_app_filter, match_command_topic
from registry.values import ApplicationInfo

log = logging.getLogger(__name__)

#: Bus subscriptions one connection may hold (each is a consumer on the bus).
MAX_SUBSCRIPTIONS = 16
#: Bus subscriptions one connection may have open, those unsubscribed and still leaving the bus
#: (a last commit, leaving the group: seconds each) included, so that a SUBSCRIBE/UNSUBSCRIBE loop
#: cannot pile up consumers.
MAX_OPEN_SUBSCRIPTIONS = 2 * MAX_SUBSCRIPTIONS
#: QoS 1 commands in flight from one application (MQTT 5 Receive Maximum of the integration).
RECEIVE_MAXIMUM = 16
COMMANDS_NOT_YET = "commands are not available yet"
UNSUPPORTED_TOPIC = "unsupported topic: commands are published to command/<application>/<device>/<command>"

#: The one table from errors to reason codes (looked up along the MRO); anything else is a bug (0x80).
REASONS: dict[type[HawserError], Reason] = {
    AuthenticationError: Reason.BAD_USER_NAME_OR_PASSWORD,
    Forbidden: Reason.NOT_AUTHORIZED,
    NotFound: Reason.NOT_AUTHORIZED,  # an unknown application is refused like a forbidden one
    BadRequest: Reason.IMPLEMENTATION_SPECIFIC_ERROR,
    BusUnavailable: Reason.SERVER_UNAVAILABLE,
    Overloaded: Reason.SERVER_BUSY,
}
#: The codes a SUBACK may carry (MQTT 5, 3.9.3); others become 0x80 there.
SUBACK_REASONS = frozenset({Reason.UNSPECIFIED_ERROR, Reason.IMPLEMENTATION_SPECIFIC_ERROR, Reason.NOT_AUTHORIZED,
                            Reason.TOPIC_FILTER_INVALID, Reason.QUOTA_EXCEEDED,
                            Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED})

CONNECTIONS = Gauge("hawser_mqtt_integration_connections", "Open MQTT integration connections")
CONNECTS_REFUSED = Counter("hawser_mqtt_integration_connects_refused", "Refused MQTT integration CONNECTs",
                           ["reason"])
SUBSCRIBES_REFUSED = Counter("hawser_mqtt_integration_subscriptions_refused",
                             "Topic filters refused in a SUBSCRIBE", ["reason"])
PUBLISHES_REFUSED = Counter("hawser_mqtt_integration_publishes_refused",
                            "Publishes of applications refused (QoS 0 ones dropped)")


def reason_for(error: HawserError) -> Reason:
    for cls in type(error).__mro__:
        if cls in REASONS:
            return REASONS[cls]
    return Reason.UNSPECIFIED_ERROR


class MqttIntegration:
    """The handler of the integration's MQTT listeners (plain and TLS alike)."""

    def __init__(self, bus: EventBus, store: Memberships, authenticator: UserAuthenticator,
                 settings: MqttIntegrationSettings) -> None:
        self._bus = bus
        self._store = store
        self._users = authenticator
        self.settings = settings
        self.limits = StreamLimits(max_packet_size=settings.max_packet_bytes, receive_maximum=RECEIVE_MAXIMUM,
                                   connect_timeout_s=settings.connect_timeout_s,
                                   write_buffer_bytes=settings.write_buffer_bytes)

    async def handle(self, stream: MqttStream) -> None:
        connect = await stream.read_connect()
        if connect is None:
            return
        if connect.properties.authentication_method is not None:
            # MQTT 5 enhanced authentication is not offered (as the device endpoint): say so, rather
            # than accept a client that expects an AUTH exchange nobody will answer.
            CONNECTS_REFUSED.labels("bad_authentication_method").inc()
            stream.refuse(Reason.BAD_AUTHENTICATION_METHOD)
            return
        try:
            principal = await self._authenticate(connect)
        except HawserError as error:
            reason = reason_for(error)
            log.info("MQTT integration: %s refused (%s): %s", stream.peer, reason.name, error.detail)
            CONNECTS_REFUSED.labels(reason.name.lower()).inc()
            stream.refuse(reason)
            return
        except Exception:
            log.exception("MQTT integration: authenticating %s failed", stream.peer)
            CONNECTS_REFUSED.labels("error").inc()
            stream.refuse(Reason.UNSPECIFIED_ERROR)
            return
        if stream.ended_by is not None:
            return  # gone, or past the connect timeout, while its token was checked
        # No sessions are kept: MQTT 5 is told its session ends with the connection.
        stream.accept(Properties(session_expiry_interval=0, shared_subscription_available=1,
                                 wildcard_subscription_available=0, subscription_identifier_available=1))
        CONNECTIONS.inc()
        log.info("MQTT integration: %s connected as %s", stream.peer, principal.user)
        try:
            await _Session(self, stream, principal).run()
        except Exception:
            log.exception("MQTT integration: the connection of %s failed", stream.peer)
            stream.close(Reason.UNSPECIFIED_ERROR)
        finally:
            CONNECTIONS.dec()
            log.info("MQTT integration: %s gone (%s)", stream.peer, stream.ended_by)

    async def _authenticate(self, connect: Connect) -> Principal:
        if connect.protocol_version is ProtocolVersion.V311 and not connect.clean_start:
            # Drogue refuses persistent sessions too; MQTT 5 is simply told its session expires.
            raise BadRequest("persistent sessions are not supported: connect with a clean session")
        credential = credential_of(connect.username, connect.password)
        principal = await self._users.authenticate_bearer(credential.token)
        if credential.user is not None and credential.user != principal.user:
            raise BadCredentials("the access token does not belong to that user")
        return principal

    async def authorize(self, principal: Principal, app: str) -> ApplicationInfo:
        """At least the reader role on `app`, within the token's scopes (as the WebSocket integration)."""
        """At least the reader role on `app`, within the token's scopes (as the WebSocket integration).
        Unknown and forbidden applications get the same SUBACK code (`REASONS`)."""
        return await authorize_reader(self._store, principal, app)

    async def subscribe(self, app: str, group: str | None) -> Subscription:
        return await self._bus.subscribe([events_topic(app)], group=group)


class _Session:
    """One accepted connection: reads the client's packets and owns its flows (one task each)."""

    def __init__(self, integration: MqttIntegration, stream: MqttStream, principal: Principal) -> None:
        self._integration = integration
        self._stream = stream
        self._principal = principal
        self._version = stream.connection.version
        self._flows: dict[str, Flow] = {}
        self._open: set[Flow] = set()  # flows not yet ended: `_flows` and those unsubscribed, still closing
        self._owners: dict[int, Flow] = {}  # QoS 1 packet id -> the flow that sent it
        # MQTT 5's Receive Maximum bounds what the client has un-acknowledged over the connection.
        self._shared = Window(stream.connection.peer_receive_maximum or 0xFFFF)
        self._reading = anyio.CancelScope()
        self._tasks: TaskGroup | None = None

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                try:
                    with self._reading:
                        await self._read()
                finally:
                    for flow in self._flows.values():
                        flow.stop()
        finally:
            for flow in list(self._open):  # a flow whose task was cancelled before it ever ran
                await flow.discard()

    async def _run_flow(self, flow: Flow) -> None:
        try:
            await flow.run()
        finally:
            self._open.discard(flow)

    def _end(self, reason: Reason, reason_string: str) -> None:
        """Disconnect (a flow found the application deleted, or the bus failed)."""
        log.info("MQTT integration: disconnecting %s: %s (%s)", self._stream.peer, reason_string, reason.name)
        self._stream.close(reason, reason_string)
        self._reading.cancel()

    async def _read(self) -> None:
        stream = self._stream
        while (packet := await stream.read_packet()) is not None:
            if isinstance(packet, PubAck):
                flow = self._owners.pop(packet.packet_id, None)
                if flow is not None:
                    flow.acked(packet.packet_id)
                continue
            if isinstance(packet, Subscribe):
                await self._subscribe(packet)
            elif isinstance(packet, Unsubscribe):
                self._unsubscribe(packet)
            elif isinstance(packet, Publish):
                if not self._refuse_publish(packet):
                    return
            elif isinstance(packet, Disconnect):
                return
            await stream.drain()

    async def _subscribe(self, packet: Subscribe) -> None:
        started: list[Flow] = []
        try:
            mode = content_mode(self._version or ProtocolVersion.V311, packet.properties.user_properties)
        except BadRequest as error:
            reasons = [Reason.IMPLEMENTATION_SPECIFIC_ERROR] * len(packet.subscriptions)
            reason_string: str | None = error.detail
        else:
            reason_string = None
            try:
                reasons = [await self._subscribe_one(request, mode, packet.properties.subscription_identifiers,
                                                     started) for request in packet.subscriptions]
            except BaseException:  # the connection ended meanwhile: nothing of it may stay open
                for flow in started:
                    self._flows = {f: kept for f, kept in self._flows.items() if kept is not flow}
                with anyio.CancelScope(shield=True):
                    for flow in started:
                        await flow.discard()
                        self._open.discard(flow)
                raise
        for request, reason in zip(packet.subscriptions, reasons, strict=True):
            if reason.is_error:
                SUBSCRIBES_REFUSED.labels(reason.name.lower()).inc()
                log.info("MQTT integration: %s refused %r (%s)", self._principal.user, request.topic_filter,
                         reason.name)
        properties = Properties(reason_string=reason_string)
        self._stream.send(SubAck(packet.packet_id, tuple(reasons), properties))
        assert self._tasks is not None
        for flow in started:  # after the SUBACK, so that no event precedes it
            self._tasks.start_soon(self._run_flow, flow, name="mqtt-integration-flow")

    async def _subscribe_one(self, request: SubscriptionRequest, mode: ContentMode, ids: tuple[int, ...],
                             started: list[Flow]) -> Reason:
        existing = self._flows.get(request.topic_filter)
        if existing is not None:  # a repeated filter keeps its subscription (and its QoS)
            return Reason(existing.spec.qos)
        if len(self._flows) >= MAX_SUBSCRIPTIONS or len(self._open) >= MAX_OPEN_SUBSCRIPTIONS:
            return Reason.QUOTA_EXCEEDED
        app = match_app_filter(request.topic_filter)
        if isinstance(app, Reason):
            return app
        integration = self._integration
        try:
            info = await integration.authorize(self._principal, app.application)
            subscription = await integration.subscribe(app.application, app.bus_group())
        except HawserError as error:
            reason = reason_for(error)
            return reason if reason in SUBACK_REASONS else Reason.UNSPECIFIED_ERROR
        qos = min(request.qos, 1)
        settings = integration.settings
        spec = FlowSpec(app, qos, mode, ids, info.uid)
        flow = Flow(self._stream, subscription, spec, shared=self._shared, inflight=settings.inflight,
                    buffer=DeliveryBuffer(settings.inflight, settings.write_buffer_bytes), owners=self._owners,
                    on_failure=self._end)
        self._flows[request.topic_filter] = flow
        self._open.add(flow)
        started.append(flow)
        log.info("MQTT integration: %s subscribed to %s (group %s, QoS %d)", self._principal.user,
                 app.application, app.bus_group(), qos)
        return Reason(qos)

    def _unsubscribe(self, packet: Unsubscribe) -> None:
        reasons = []
        for topic_filter in packet.topic_filters:
            flow = self._flows.pop(topic_filter, None)
            if flow is None:
                reasons.append(Reason.NO_SUBSCRIPTION_EXISTED)
            else:
                flow.stop()  # no event is sent after this; it commits and leaves in its own task
                reasons.append(Reason.SUCCESS)
        self._stream.send(UnsubAck(packet.packet_id, tuple(reasons)))

    def _refuse_publish(self, packet: Publish) -> bool:
        """Applications cannot publish yet (commands come with their issue). MQTT 5 gets a PUBACK with
        the reason; a QoS 0 publish is dropped and counted; a 3.1.1 client is disconnected (it has
        no way to hear a refusal). Returns False if the connection ends."""
        PUBLISHES_REFUSED.inc()
        text = COMMANDS_NOT_YET if match_command_topic(packet.topic) is not None else UNSUPPORTED_TOPIC
        log.info("MQTT integration: publish of %s to %r refused: %s", self._principal.user, packet.topic, text)
        if packet.packet_id is None:
            return True
        if self._version is ProtocolVersion.V5:
            self._stream.send(PubAck(packet.packet_id, Reason.IMPLEMENTATION_SPECIFIC_ERROR,
                                     Properties(reason_string=text)))
            return True
        self._stream.close(Reason.IMPLEMENTATION_SPECIFIC_ERROR)
        return False


__all__ = ["MqttIntegration", "reason_for"]
