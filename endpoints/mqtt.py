"""The MQTT device endpoint (1883, TLS 8883), versions 3.1.1 and 5, as Drogue serves it: devices
publish to `<channel>` or `<channel>/<as-device>` and subscribe to their command inboxes.

A thin transport around `hawser.mqtt.stream`: one `handle` call per socket decides the CONNECT
(credentials checked before any existing session is touched; takeover only within the same device
and client id), then `DeviceSession` (endpoints/_mqtt_session.py) serves the connection. Errors
become reason codes in one place, `endpoints._mqtt_replies.MQTT_REASON`. The composition root runs
`start_listener(endpoint.handle, host, port, limits=endpoint.limits, ssl=..., name=...)`.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter, Gauge

from auth.devices import DeviceAuthenticator
from command.sessions import DeviceSessions
from endpoints._mqtt_connect import connack_properties, connect_credentials, connect_refusal
from endpoints._mqtt_replies import connack_reason
from endpoints._mqtt_session import DeviceSession
from endpoints.ingest import Ingest
from hawser.config import MqttEndpointSettings
from hawser.errors import HawserError
from hawser.mqtt.packets import Reason
from hawser.mqtt.stream import MqttStream, StreamLimits

log = logging.getLogger(__name__)

CONNECTIONS = Gauge("hawser_mqtt_endpoint_connections", "Authenticated device connections open.")
CONNECTS = Counter("hawser_mqtt_endpoint_connects", "Device CONNECTs answered, by outcome.", ["outcome"])
_ACCEPTED = CONNECTS.labels("accepted")

#: Bytes a PUBLISH may carry beyond the largest payload (fixed header, topic, properties): a payload
#: over `max_payload_bytes` within this is refused alone (0x97), a packet beyond it closes the
#: connection (0x95, the stream's decoder refuses it from its header, before buffering it).
PACKET_HEADROOM = 16 * 1024


class MqttEndpoint:
    """The connection handler of the device endpoint, shared by its plain and TLS listeners."""

    def __init__(
        self,
        ingest: Ingest,
        authenticator: DeviceAuthenticator,
        sessions: DeviceSessions,
        settings: MqttEndpointSettings,
    ) -> None:
        self.ingest = ingest
        self.authenticator = authenticator
        self.sessions = sessions
        self.settings = settings
        self.limits = StreamLimits(
            max_packet_size=settings.max_payload_bytes + PACKET_HEADROOM,
            receive_maximum=settings.receive_maximum,
            connect_timeout_s=settings.connect_timeout_s,
            write_buffer_bytes=settings.write_buffer_bytes,
        )
        #: How long a connection taking over waits for the old one's disconnected event.
        self.takeover_wait_s = settings.connect_timeout_s

    async def handle(self, stream: MqttStream) -> None:
        connect = await stream.read_connect()
        if connect is None:
            return
        refusal = connect_refusal(connect)
        if refusal is not None:
            self._refuse(stream, *refusal)
            return
        # Authenticate before anything else: nothing of an existing session is touched until then.
        try:
            credentials = connect_credentials(connect, stream.ssl_object)
            outcome = await self.authenticator.authenticate(credentials)
        except HawserError as error:
            self._refuse(stream, connack_reason(error), error.detail)
            return
        except Exception:
            log.exception("authenticating an MQTT device from %s failed", stream.peer)
            self._refuse(stream, Reason.UNSPECIFIED_ERROR, None)
            return
        if stream.ended_by is not None:
            # Gone (or past the connect timeout) while its credentials were checked: a connection
            # that will never hear its CONNACK takes nothing over and sends no connection events.
            return
        session = DeviceSession(
            stream, connect, outcome, credentials, ingest=self.ingest, authenticator=self.authenticator,
            sessions=self.sessions, window=self.limits.receive_maximum,
        )
        try:
            old = self.sessions.register(session)
            if old is not None:
                await self._wait_ended(old)
            if session.taken_over or stream.ended_by is not None:  # a third connection with the same
                return  # id won meanwhile, or this one is gone (or timed out) while the old one ended
            stream.accept(connack_properties(connect))
            _ACCEPTED.inc()
            CONNECTIONS.inc()
            try:
                await session.run()
            finally:
                CONNECTIONS.dec()
        finally:
            self.sessions.unregister(session)
            session.ended.set()

    async def _wait_ended(self, old: object) -> None:
        """Let a session taken over send its disconnected event before this one's connected event,
        so that applications see the two in that order; bounded, as the bus may be slow."""
        if not isinstance(old, DeviceSession):
            return
        try:
            async with asyncio.timeout(self.takeover_wait_s):
                await old.ended.wait()
        except TimeoutError:
            log.warning("session of %s/%s taken over did not end within %s s", old.application, old.device,
                        self.takeover_wait_s)

    @staticmethod
    def _refuse(stream: MqttStream, reason: Reason, detail: str | None) -> None:
        CONNECTS.labels(reason.name.lower()).inc()
        log.debug("MQTT CONNECT from %s refused: %s (%s)", stream.peer, reason.name, detail)
        stream.refuse(reason, detail)


__all__ = ["PACKET_HEADROOM", "MqttEndpoint"]
