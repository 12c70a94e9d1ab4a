"""paho-mqtt (a real, widely used MQTT client) driven from asyncio tests, for the device endpoint,
the integration and the end-to-end tests alike.

paho runs its network loop in its own thread (`loop_start`); its callbacks only hand results to the
test's event loop with `call_soon_threadsafe`. Every wait has a deadline; `aclose` always stops the
thread. Results are paho's `ReasonCode`s: they compare equal to their numeric value (`== 0x87`, also
to Hawser's `Reason`), show their name when an assertion fails, and are not hashable (no sets).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
TIMEOUT = 10.0


class Paho:
    """One paho client, without automatic reconnection (a device taken over must not come back and
    take over in turn). `messages` receives what the server delivers; `disconnected` resolves with
    the reason the connection ended (the server's DISCONNECT reason in MQTT 5)."""

    def __init__(
        self, client_id: str = "", *, version: int = V5, username: str | None = None, password: str | None = None,
        keepalive: int = 60, clean: bool = True, inflight: int = 16, cafile: str | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.version, self.keepalive, self.clean = MQTTProtocolVersion(version), keepalive, clean
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=self.version,
            clean_session=clean if self.version != V5 else None, reconnect_on_failure=False,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if cafile is not None:
            self.client.tls_set(ca_certs=cafile)
        # paho ignores the server's Receive Maximum (16 in the endpoint's tests) and would send 20.
        self.client.max_inflight_messages_set(inflight)
        self.messages: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self.connack_properties: Properties | None = None
        self.disconnected: asyncio.Future[ReasonCode] = self.loop.create_future()
        self._connack: asyncio.Future[ReasonCode] = self.loop.create_future()
        # PUBACKs, SUBACKs and UNSUBACKs by packet id (one counter for all three in paho). A request
        # is registered before the test yields, and answers are handled on the loop: never before it.
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._started = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_acknowledged
        self.client.on_subscribe = self._on_acknowledged
        self.client.on_unsubscribe = self._on_acknowledged
        self.client.on_message = self._on_message

    # --- callbacks (paho's thread) ---------------------------------------------------------------

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, properties: Properties | None) -> None:
        self.loop.call_soon_threadsafe(self._connacked, reason, properties)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.loop.call_soon_threadsafe(_resolve, self.disconnected, reason)
        self.loop.call_soon_threadsafe(_resolve, self._connack, reason)  # closed before any CONNACK

    def _on_acknowledged(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        """PUBACK (one reason; QoS 0: once written) or SUBACK/UNSUBACK (a list, one per filter)."""
        self.loop.call_soon_threadsafe(self._answered, mid, reason)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.messages.put_nowait, message)

    # --- the loop's side -------------------------------------------------------------------------

    def _connacked(self, reason: ReasonCode, properties: Properties | None) -> None:
        if not self._connack.done():
            self.connack_properties = properties
            self._connack.set_result(reason)

    def _answered(self, mid: int, value: Any) -> None:
        future = self._pending.pop(mid, None)
        if future is not None:
            _resolve(future, value)

    def _await_answer(self, mid: int | None) -> asyncio.Future[Any]:
        assert mid is not None, "paho sent nothing (not connected?)"
        future: asyncio.Future[Any] = self.loop.create_future()
        self._pending[mid] = future
        return future

    async def connect(self, port: int, host: str = "127.0.0.1", properties: Properties | None = None) -> ReasonCode:
        """Connect and return the CONNACK's reason (0 = accepted)."""
        kwargs: dict[str, Any] = {"clean_start": self.clean, "properties": properties} if self.version == V5 else {}
        # In a thread: the server may run on this very loop (and a TLS handshake needs it to answer).
        await asyncio.to_thread(self.client.connect, host, port, self.keepalive, **kwargs)
        self.client.loop_start()
        self._started = True
        return await asyncio.wait_for(asyncio.shield(self._connack), TIMEOUT)

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, properties: Properties | None = None
    ) -> asyncio.Future[ReasonCode]:
        """Send a PUBLISH; the future resolves with the PUBACK's reason (QoS 0: once written)."""
        return self._await_answer(self.client.publish(topic, payload, qos=qos, properties=properties).mid)

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, properties: Properties | None = None,
        timeout: float = TIMEOUT,
    ) -> ReasonCode:
        """The PUBACK's reason (0 = accepted; QoS 0: once written)."""
        return await asyncio.wait_for(self.publish_nowait(topic, payload, qos, properties), timeout)

    async def subscribe(
        self, topics: str | Sequence[tuple[str, int]], qos: int = 1, *, properties: Properties | None = None
    ) -> list[ReasonCode]:
        """Subscribe to one filter at `qos`, or to several `(filter, qos)`: the SUBACK's codes, one per filter."""
        if isinstance(topics, str):
            result, mid = self.client.subscribe(topics, qos, properties=properties)
        else:
            result, mid = self.client.subscribe(list(topics), properties=properties)
        assert result == mqtt.MQTT_ERR_SUCCESS, result
        answer: list[ReasonCode] = await asyncio.wait_for(self._await_answer(mid), TIMEOUT)
        return answer

    async def unsubscribe(self, topic: str) -> list[ReasonCode]:
        """The UNSUBACK's codes (MQTT 5), one per filter."""
        _, mid = self.client.unsubscribe(topic)
        answer: list[ReasonCode] = await asyncio.wait_for(self._await_answer(mid), TIMEOUT)
        return answer

    async def next_message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def wait_disconnected(self, timeout: float = TIMEOUT) -> ReasonCode:
        return await asyncio.wait_for(asyncio.shield(self.disconnected), timeout)

    async def aclose(self) -> None:
        """Disconnect cleanly if still connected, and stop paho's thread. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        if not self.disconnected.done():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.disconnected), 2)
        await asyncio.to_thread(self.client.loop_stop)

    async def __aenter__(self) -> Paho:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


@contextlib.asynccontextmanager
async def paho_client(port: int, username: str | None = None, password: str | None = None, **options: Any
                      ) -> AsyncIterator[Paho]:
    """A connected `Paho` (asserts the CONNACK was a success; `options` as `Paho` takes them)."""
    async with Paho(username=username, password=password, **options) as client:
        reason = await client.connect(port)
        assert not reason.is_failure, f"CONNECT refused: {reason}"
        yield client


def paho_properties(packet_type: int = PacketTypes.PUBLISH, **values: Any) -> Properties:
    """paho's MQTT 5 properties of a packet type (`PacketTypes`), with `values` set by paho's names
    (`ContentType="text/plain"`, `UserProperty=[("k", "v")]`)."""
    properties = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


def prop(properties: Properties | None, name: str) -> Any:
    """One property by paho's name (they are set dynamically), None when absent."""
    return getattr(properties, name, None)


def user_properties(message: mqtt.MQTTMessage) -> dict[str, str]:
    """A v5 message's user properties as a dict."""
    return dict(prop(getattr(message, "properties", None), "UserProperty") or [])
