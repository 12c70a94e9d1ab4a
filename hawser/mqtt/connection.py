"""The server side of one MQTT connection as a pure state machine (h11-style): bytes in, packets out;
packets in, bytes out. The caller owns the socket, the clock and the decisions (who may connect,
what a publish means); this object owns the protocol's rules.

CONTRACT (implemented by the codec work; tests in tests/mqtt/ join it with a client in memory):

States: AWAITING_CONNECT → CONNECTING (a CONNECT was returned; the caller decides) → CONNECTED
(after `accept`) → CLOSED (after `refuse`, `close`, a received DISCONNECT, or any ProtocolError).

- `receive_data(data)`: feed bytes (b"" = the peer closed). `buffered` says how many bytes wait, so the
  transport can stop reading past its bound.
- `next_packet()`: the next packet the caller must act on, or None when more bytes are needed (or
  while CONNECTING: nothing after the CONNECT is returned before `accept`). Raises `ProtocolError`
  (and moves to CLOSED) for: anything but CONNECT first; a second CONNECT; a packet a client never
  sends; QoS 2 when `maximum_qos` is 1 (reason QOS_NOT_SUPPORTED); a topic alias of 0 or above the
  advertised maximum, or an unknown alias with an empty topic (TOPIC_ALIAS_INVALID); more QoS 1
  publishes un-acknowledged than the Receive Maximum advertised (RECEIVE_MAXIMUM_EXCEEDED, MQTT 5);
  a QoS 1 publish reusing an un-acknowledged packet id (PACKET_IDENTIFIER_IN_USE); invalid topic
  names (TOPIC_NAME_INVALID) or filters (TOPIC_FILTER_INVALID is NOT raised: invalid filters in a
  SUBSCRIBE are returned for the caller to refuse per filter, as MQTT 5 asks); in MQTT 5 a
  payload_format_indicator of 1 with a payload that is not UTF-8 (PAYLOAD_FORMAT_INVALID).
  PINGREQ is answered by the state machine itself: it is returned (so a transport can reset timers),
  and its PINGRESP bytes are queued in `data_to_send()`.
  Topic aliases are resolved: a returned PUBLISH always has its full topic (and no topic_alias).
  A received DISCONNECT is returned, then the state is CLOSED.
- `accept(properties=NO_PROPERTIES) -> bytes`: the CONNACK (success). In MQTT 5 it announces
  `receive_maximum`, `maximum_packet_size`, `topic_alias_maximum`, `maximum_qos` (when 1),
  `retain_available=0` and the caller's extra properties (a session_expiry_interval, a reason string);
  an empty client id in MQTT 5 gets an `assigned_client_identifier` (see `client_id`).
- `refuse(reason, reason_string=None) -> bytes`: the CONNACK refusing the connection (3.1.1 return
  code mapped from `reason`); state CLOSED.
- `send(packet) -> bytes`: encode a server→client packet for the negotiated version. Sending a PUBACK
  releases the in-flight slot of that packet id. A PUBLISH of QoS 1 must carry a packet id from
  `next_packet_id()` (still un-acknowledged ids are skipped); the matching PUBACK from the client is
  returned by `next_packet` and frees the id. Raises `TooLargeForPeer` (nothing encoded) for a packet
  above the client's Maximum Packet Size.
- `close(reason, reason_string=None) -> bytes`: the DISCONNECT to send before closing (MQTT 5, once
  connected) or b"". `send(Disconnect(...))` does the same with any DISCONNECT properties.
- `error_reply(error) -> bytes`: what to send for a `ProtocolError` before closing: a CONNACK while
  AWAITING_CONNECT/CONNECTING (3.1.1 format for an unsupported version), a DISCONNECT with the reason in
  MQTT 5 once connected, else b"".
- `data_to_send() -> bytes`: bytes the state machine produced by itself (PINGRESP), emptied by the call.
- Attributes: `state`, `version` (None before CONNECT), `client_id` (assigned when empty), `keep_alive`
  (seconds the client announced, 0 = none), `inflight` (QoS 1 publishes received and not yet PUBACKed),
  `peer_maximum_packet_size`, `peer_receive_maximum` (MQTT 5 CONNECT properties; 65,535 / None by default).

Details the contract leaves open, as implemented:
- `next_packet_id()` reserves the id it returns (until the client's PUBACK, or a TooLargeForPeer);
  `outgoing_inflight` counts those (keep it under `peer_receive_maximum`). `inflight` is a property.
- We announce Retain Available 0, so an MQTT 5 PUBLISH or will with RETAIN raises RETAIN_NOT_SUPPORTED
  (3.1.1 cannot refuse it: the flag is passed on). A will QoS above `maximum_qos` raises
  QOS_NOT_SUPPORTED in MQTT 5. A 3.1.1 QoS 1 PUBLISH that reuses an un-acknowledged id with DUP set is
  a retransmission (3.1.1 allows them): returned again, not counted twice.
- `accept` overrides the properties the state machine enforces (receive maximum, maximum packet size,
  topic alias maximum, maximum QoS, retain available); a caller's `server_keep_alive` updates `keep_alive`.
- `send` in CLOSED returns b"" (the socket is going); `send`/`accept`/`refuse` at the wrong time, or of a
  packet a server never sends (CONNECT, CONNACK, SUBSCRIBE, UNSUBSCRIBE, PINGREQ), are bugs: RuntimeError /
  ValueError. When the client asked for no problem information (MQTT 5), reason strings and user
  properties are left out of acknowledgements, and out of any non-PUBLISH packet that would otherwise
  exceed the client's Maximum Packet Size, as the spec requires.
- `error_reply` answers a ProtocolError the caller raised itself too, and only once (then b""). A reason
  the answering packet cannot carry (PACKET_IDENTIFIER_IN_USE is no DISCONNECT code) becomes
  PROTOCOL_ERROR / MALFORMED_PACKET; the error's detail is the reason string (MQTT 5, unless the client
  asked for no problem information). A 3.1.1 CONNECT that breaks the rules is closed without a CONNACK.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import replace

from hawser.mqtt._rules import accepting_properties, check_utf8, check_will, encode_for_peer, error_packet
from hawser.mqtt._window import Window
from hawser.mqtt._wire import Role
from hawser.mqtt.codec import Decoder, encode
from hawser.mqtt.errors import ProtocolError, TooLargeForPeer, UnsupportedProtocolVersion
from hawser.mqtt.packets import (
    MAX_UINT16,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    Properties,
    ProtocolVersion,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    Reason,
    Subscribe,
    Unsubscribe,
)
from hawser.mqtt.topics import check_topic_name, split_shared

__all__ = ["ServerConnection", "State"]


class State(enum.Enum):
    AWAITING_CONNECT = "awaiting-connect"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


_CONNECTED, _CLOSED = State.CONNECTED, State.CLOSED
_V5 = ProtocolVersion.V5
_PINGRESP = b"\xd0\x00"
_CONNACK_OK_V311 = b"\x20\x02\x00\x00"
#: 3.1.1's CONNACK "unacceptable protocol version", which clients of every version can read.
_CONNACK_BAD_VERSION = b"\x20\x02\x00\x01"
_NOT_SENT_BY_SERVER = (Connect, ConnAck, Subscribe, Unsubscribe, PingReq)


class ServerConnection:
    __slots__ = (
        "_accepted", "_alias_max", "_aliases", "_assigned", "_auth_method", "_decoder", "_eof", "_finished",
        "_max_packet_size", "_max_qos", "_pings", "_problem_info", "_receive_max", "_session_expiry", "_v5",
        "_window", "client_id", "keep_alive", "peer_maximum_packet_size", "peer_receive_maximum", "state", "version",
    )

    def __init__(
        self,
        *,
        max_packet_size: int = 1024 * 1024,
        receive_maximum: int = 64,
        topic_alias_maximum: int = 16,
        maximum_qos: int = 1,
    ) -> None:
        if not 1 <= receive_maximum <= MAX_UINT16 or not 0 <= topic_alias_maximum <= MAX_UINT16:
            raise ValueError("receive_maximum must be 1 to 65535 and topic_alias_maximum 0 to 65535")
        if maximum_qos not in (0, 1, 2):
            raise ValueError("maximum_qos must be 0, 1 or 2")
        self._decoder = Decoder(None, role=Role.CLIENT, max_packet_size=max_packet_size)
        self._max_packet_size = max_packet_size
        self._receive_max = receive_maximum
        self._alias_max = topic_alias_maximum
        self._max_qos = maximum_qos
        self.state = State.AWAITING_CONNECT
        self.version: ProtocolVersion | None = None
        self.client_id = ""
        self.keep_alive = 0
        self.peer_maximum_packet_size: int | None = None
        self.peer_receive_maximum = MAX_UINT16
        self._v5 = False
        self._window = Window()
        self._aliases: dict[int, str] = {}
        self._pings = self._session_expiry = 0
        self._accepted = self._finished = self._eof = self._assigned = False
        self._problem_info = True
        self._auth_method: str | None = None

    @property
    def buffered(self) -> int:
        return self._decoder.buffered

    @property
    def inflight(self) -> int:
        """QoS 1/2 publishes of the client not yet answered (PUBACK, or PUBCOMP / refusing PUBREC)."""
        return len(self._window.received)

    @property
    def outgoing_inflight(self) -> int:
        """Our QoS 1/2 publishes (and reserved ids) the client has not acknowledged yet."""
        return len(self._window.sent)

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self.state is not _CLOSED:
            self._decoder.feed(data)

    # --- receiving -----------------------------------------------------------------------------------

    def next_packet(self) -> Packet | None:
        state = self.state
        if state is not _CONNECTED and state is not State.AWAITING_CONNECT:
            return None
        try:
            packet = self._decoder.next_packet()
            if packet is None:
                if self._eof:
                    self.state = _CLOSED
                return None
            if type(packet) is Publish:
                return self._publish(packet)
            return self._control(packet)
        except ProtocolError:
            self.version = self.version or self._decoder.version
            self.state = _CLOSED
            raise

    def _publish(self, packet: Publish) -> Publish:
        props = packet.properties
        if props is not NO_PROPERTIES:
            if props.topic_alias is not None:
                packet = self._resolve_alias(packet, props.topic_alias)
            if props.payload_format_indicator == 1:
                check_utf8(packet.payload, "the payload")
        topic = packet.topic
        if not topic or "+" in topic or "#" in topic:  # UTF-8, U+0000 and length: checked by the decoder
            raise ProtocolError(f"invalid topic name {topic[:100]!r}", Reason.TOPIC_NAME_INVALID)
        if packet.retain and self._v5:
            raise ProtocolError("retain is not available", Reason.RETAIN_NOT_SUPPORTED)
        if packet.qos:
            if packet.qos > self._max_qos:
                raise ProtocolError(f"QoS {packet.qos} is not supported", Reason.QOS_NOT_SUPPORTED)
            self._window.receive(packet, self._v5, self._receive_max)
        return packet

    def _resolve_alias(self, packet: Publish, alias: int) -> Publish:
        if alias > self._alias_max:
            raise ProtocolError(f"topic alias {alias} above the maximum", Reason.TOPIC_ALIAS_INVALID)
        topic = packet.topic
        if topic:
            self._aliases[alias] = check_topic_name(topic)
        else:
            known = self._aliases.get(alias)
            if known is None:
                raise ProtocolError(f"unknown topic alias {alias}", Reason.TOPIC_ALIAS_INVALID)
            topic = known
        props = replace(packet.properties, topic_alias=None)
        return Publish(topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id,
                       NO_PROPERTIES if props == NO_PROPERTIES else props)

    def _control(self, packet: Packet) -> Packet:
        kind = type(packet)
        if kind is Connect:
            assert isinstance(packet, Connect)
            if self.state is State.AWAITING_CONNECT:
                return self._connect(packet)
            raise ProtocolError("a second CONNECT")
        if kind is PingReq:
            self._pings += 1
        elif kind is PubAck or kind is PubComp or kind is PubRec:
            self._window.acknowledged_by_client(packet)
        elif kind is Subscribe and self._v5:
            assert isinstance(packet, Subscribe)
            if any(s.no_local and split_shared(s.topic_filter)[0] is not None for s in packet.subscriptions):
                raise ProtocolError("no local on a shared subscription")
        elif kind is Disconnect:
            assert isinstance(packet, Disconnect)
            if packet.properties.session_expiry_interval and not self._session_expiry:
                raise ProtocolError("session expiry set at DISCONNECT after 0 at CONNECT")
            self.state = _CLOSED
            self._finished = True
        elif kind is Auth and self._auth_method is None:
            raise ProtocolError("AUTH without an authentication method at CONNECT")
        return packet

    def _connect(self, packet: Connect) -> Connect:
        self.version = packet.protocol_version
        self._v5 = v5 = packet.protocol_version is _V5
        self.keep_alive = packet.keep_alive
        client_id = packet.client_id
        if not client_id and (v5 or packet.clean_start):
            client_id = "auto-" + secrets.token_hex(12)
            self._assigned = True
        self.client_id = client_id
        if v5:
            props = packet.properties
            self.peer_receive_maximum = props.receive_maximum or MAX_UINT16
            self.peer_maximum_packet_size = props.maximum_packet_size
            self._problem_info = props.request_problem_information != 0
            self._session_expiry = props.session_expiry_interval or 0
            self._auth_method = props.authentication_method
        if packet.will is not None:
            check_will(packet.will, v5, self._max_qos)
        self.state = State.CONNECTING
        return packet

    # --- answering the CONNECT -----------------------------------------------------------------------

    def accept(self, properties: Properties = NO_PROPERTIES) -> bytes:
        if self.state is not State.CONNECTING:
            raise RuntimeError(f"accept() in state {self.state.value}")
        self.state = _CONNECTED
        self._accepted = True
        if properties.server_keep_alive is not None:
            self.keep_alive = properties.server_keep_alive
        if not self._v5:
            return _CONNACK_OK_V311
        props = accepting_properties(
            properties, receive_maximum=self._receive_max, maximum_packet_size=self._max_packet_size,
            topic_alias_maximum=self._alias_max, maximum_qos=self._max_qos,
            assigned_client_id=self.client_id if self._assigned else None,
        )
        return encode(ConnAck(properties=props), _V5)

    def refuse(self, reason: Reason, reason_string: str | None = None) -> bytes:
        if self.state is not State.CONNECTING:
            raise RuntimeError(f"refuse() in state {self.state.value}")
        if not reason.is_error:
            raise ValueError("refuse() needs an error reason")
        assert self.version is not None
        props = Properties(reason_string=reason_string) if reason_string and self._v5 else NO_PROPERTIES
        data = encode(ConnAck(reason=reason, properties=props), self.version)
        self.state = _CLOSED
        self._finished = True
        return data

    # --- sending -------------------------------------------------------------------------------------

    def send(self, packet: Packet) -> bytes:
        if self.state is not _CONNECTED:
            if self.state is _CLOSED:
                return b""
            raise RuntimeError(f"send() in state {self.state.value}")
        if type(packet) is PubAck and packet.properties is NO_PROPERTIES:  # the hot path
            data = encode(packet, self.version)  # type: ignore[arg-type]
            self._window.received.discard(packet.packet_id)
            return data
        if isinstance(packet, _NOT_SENT_BY_SERVER):
            raise ValueError(f"a server does not send {type(packet).__name__} with send()")
        if isinstance(packet, Disconnect):
            return self._disconnect(packet)
        assert self.version is not None
        try:
            data = encode_for_peer(packet, self.version, self.peer_maximum_packet_size, self._problem_info)
        except TooLargeForPeer:
            self._window.sent_by_server(packet, delivered=False)  # dropped, and then treated as delivered
            raise
        self._window.sent_by_server(packet, delivered=True)
        return data

    def acknowledge(self, packet_id: int) -> bytes:
        """The successful PUBACK of a received QoS 1 publish: what `send(PubAck(packet_id))` returns,
        without building the packet (the same four bytes in both versions), for the hot path."""
        if self.state is not _CONNECTED:
            if self.state is _CLOSED:
                return b""
            raise RuntimeError(f"acknowledge() in state {self.state.value}")
        self._window.received.discard(packet_id)
        return b"\x40\x02" + packet_id.to_bytes(2, "big")

    def next_packet_id(self) -> int:
        return self._window.reserve()

    # --- ending --------------------------------------------------------------------------------------

    def close(self, reason: Reason = Reason.SUCCESS, reason_string: str | None = None) -> bytes:
        props = Properties(reason_string=reason_string) if reason_string is not None else NO_PROPERTIES
        return self._disconnect(Disconnect(reason, props))

    def _disconnect(self, packet: Disconnect) -> bytes:
        data = b""
        if self.state is _CONNECTED and self._v5 and not self._finished:
            data = encode_for_peer(packet, _V5, self.peer_maximum_packet_size, self._problem_info)
        self.state = _CLOSED
        self._finished = True
        return data

    def error_reply(self, error: ProtocolError) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        self.state = _CLOSED
        if isinstance(error, UnsupportedProtocolVersion):
            return _CONNACK_BAD_VERSION
        if self.version is not _V5:
            return b""  # 3.1.1 closes without a word [MQTT-3.1.4-1], and has no DISCONNECT from servers
        packet = error_packet(error, connected=self._accepted, problem_info=self._problem_info)
        try:
            return encode_for_peer(packet, _V5, self.peer_maximum_packet_size, True)
        except TooLargeForPeer:
            return b""

    def data_to_send(self) -> bytes:
        pings, self._pings = self._pings, 0
        return _PINGRESP * pings
