"""paho-mqtt (a real, widely used MQTT client) driven from asyncio tests.

paho runs its network loop in its own thread (`loop_start`); its callbacks hand results to the test's
event loop with `call_soon_threadsafe`. Every wait has a deadline; `aclose` always stops the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
TIMEOUT = 10.0


def _code(reason: Any) -> int:
    """paho gives ReasonCode objects (v5, and v2 callbacks) or ints (3.1.1 paths)."""
    return reason.value if isinstance(reason, ReasonCode) else int(reason)


class Paho:
    """One paho client. `messages` receives what the server delivers; `disconnected` resolves with
    the reason code of the end of the connection (the server's DISCONNECT reason in MQTT 5)."""

    def __init__(
        self, client_id: str = "", *, version: int = V5, username: str | None = None, password: str | None = None,
        keepalive: int = 60, clean: bool = True, cafile: str | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.version = version
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": version}
        if version != V5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if username is not None:
            self.client.username_pw_set(username, password)
        if cafile is not None:
            self.client.tls_set(ca_certs=cafile, cert_reqs=ssl.CERT_REQUIRED)
        self.keepalive = keepalive
        self.messages: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self.connected: asyncio.Future[tuple[int, Properties | None]] = self.loop.create_future()
        self.disconnected: asyncio.Future[int] = self.loop.create_future()
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._early: dict[int, int] = {}
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # --- callbacks (paho's thread) ---------------------------------------------------------------

    def _settle(self, future: asyncio.Future[Any], value: Any) -> None:
        def settle() -> None:
            if not future.done():
                future.set_result(value)
        self.loop.call_soon_threadsafe(settle)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._settle(self.connected, (_code(reason), properties))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._settle(self.disconnected, _code(reason))
        self._settle(self.connected, (_code(reason), properties))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        def settle() -> None:
            future = self._acks.pop(mid, None)
            if future is None:
                self._early[mid] = _code(reason)
            elif not future.done():
                future.set_result(_code(reason))
        self.loop.call_soon_threadsafe(settle)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        future = self._subacks.get(mid)
        if future is not None:
            self._settle(future, [_code(r) for r in reasons])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.messages.put_nowait, message)

    # --- the test's side ----------------------------------------------------------------------------

    async def connect(self, port: int, host: str = "127.0.0.1", properties: Properties | None = None) -> int:
        """Connect and return the CONNACK reason (0 = accepted)."""
        self.client.connect(host, port, keepalive=self.keepalive, properties=properties)
        self.client.loop_start()
        code, _ = await asyncio.wait_for(asyncio.shield(self.connected), TIMEOUT)
        return code

    async def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                      properties: Properties | None = None) -> int:
        """Publish; for QoS 1 wait for the PUBACK and return its reason (0 = accepted)."""
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if qos == 0:
            return 0
        future: asyncio.Future[int] = self.loop.create_future()
        if info.mid in self._early:
            return self._early.pop(info.mid)
        self._acks[info.mid] = future
        return await asyncio.wait_for(future, TIMEOUT)

    async def subscribe(self, topics: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe and return the SUBACK's codes, one per filter."""
        if self.version == V5:
            requests: list[Any] = [(t, SubscribeOptions(qos=q)) for t, q in topics]
        else:
            requests = list(topics)
        future: asyncio.Future[list[int]] = self.loop.create_future()
        result, mid = self.client.subscribe(requests)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert mid is not None
        self._subacks[mid] = future
        return await asyncio.wait_for(future, TIMEOUT)

    async def next_message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def wait_disconnected(self, timeout: float = TIMEOUT) -> int:
        return await asyncio.wait_for(asyncio.shield(self.disconnected), timeout)

    async def aclose(self) -> None:
        """Disconnect cleanly if still connected, and stop paho's thread."""
        if not self.disconnected.done():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.disconnected), 2)
        await asyncio.to_thread(self.client.loop_stop)


def user_properties(message: mqtt.MQTTMessage) -> dict[str, str]:
    """A v5 message's user properties as a dict."""
    props = getattr(message, "properties", None)
    return dict(getattr(props, "UserProperty", []) or [])


def publish_properties(*, content_type: str | None = None, user: Sequence[tuple[str, str]] = ()) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type is not None:
        props.ContentType = content_type
    if user:
        props.UserProperty = list(user)
    return props
