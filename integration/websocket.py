"""The WebSocket integration: `GET /api/integration/v1/apps/{app}/events[?group_id=]` on the API port.

Each socket is one bus subscription (`events-<app>`, with the group when `group_id` is given) and
three tasks: a pump from the bus into a buffer bounded in events and bytes, a forwarder from the
buffer to the socket (committing only what was sent), and a watcher for the client going away. A
slow client fills the buffer, the pump stops reading and the bus keeps the rest. Refusals happen
before the handshake completes, as HTTP 401/403 (503 if the bus refuses) with a problem body.

Delivery to a group is AT MOST ONCE per event as far as the application is concerned: WebSocket has
no application-level acknowledgement, so "committed" means "written to the socket". Events sent but
not yet read by a client that leaves (a few, up to what the socket and the OS buffers held) are lost
to the group. Keep `websocket_buffer` small; an application that needs more should read Kafka with its
own consumer group. Across a rebalance, read-ahead events of a partition that moved are dropped here
(`Subscription.holds`) and re-read by the new owner from the last commit.

The socket closes with 1008 when the application's topic is deleted, or when an event of another
application of the same name (a different `applicationuid` than at authorization) shows up.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
from prometheus_client import Counter, Gauge
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from hawser.access import Principal, UserAuthenticator
from hawser.bus import Delivery, EventBus, Subscription
from hawser.errors import (
    BadCredentials,
    HawserError,
    UnknownTopic,
)
from hawser.events import events_topic
from hawser.problems import API_STATUS, problem_for
from integration._access import Memberships, authorize_reader
from integration._buffer import DeliveryBuffer
from integration._credentials import consumer_group, credential_from
from registry.values import ApplicationInfo

log = logging.getLogger(__name__)

PATH = "/api/integration/v1/apps/{app}/events"

#: Close codes after the handshake: the bus failed (1011) or is shutting down (1001), the application
#: was deleted (1008, policy: this socket's authorization no longer holds).
CLOSE_BUS_FAILED = 1011
CLOSE_GOING_AWAY = 1001
CLOSE_APP_GONE = 1008
#: Default bound of one socket's buffer in bytes (ApiSettings.websocket_buffer_bytes).
BUFFER_BYTES = 1024 * 1024
#: A socket with a group commits at least this often (in frames), else whenever its buffer drains.
COMMIT_EVERY = 100
#: How long the last commit of a closing socket may take before it is given up (events re-sent).
FINAL_COMMIT_S = 5.0

OPEN_SOCKETS = Gauge("hawser_websocket_sockets", "Open WebSocket integration sockets")
FRAMES_SENT = Counter("hawser_websocket_events_sent", "Events sent to WebSocket integration clients")
DROPPED_MOVED = Counter("hawser_websocket_events_dropped_moved",
                        "Read-ahead events not sent because their partition moved to another member")


def routes(
    bus: EventBus, store: Memberships, authenticator: UserAuthenticator, *, buffer: int,
    buffer_bytes: int = BUFFER_BYTES,
) -> list[BaseRoute]:
    """The integration's routes, to mount at the root of the API app."""
    endpoint = _EventStream(bus, store, authenticator, buffer=buffer, buffer_bytes=buffer_bytes)
    return [WebSocketRoute(PATH, endpoint.handle, name="integration-events")]


class _EventStream:
    def __init__(
        self, bus: EventBus, store: Memberships, authenticator: UserAuthenticator, *, buffer: int,
        buffer_bytes: int,
    ) -> None:
        if buffer < 1 or buffer_bytes < 1:
            raise ValueError("buffer must hold at least one event")
        self._bus = bus
        self._store = store
        self._users = authenticator
        self._buffer = buffer
        self._buffer_bytes = buffer_bytes

    async def handle(self, websocket: WebSocket) -> None:
        app: str = websocket.path_params["app"]
        try:
            principal, application = await self._authorize(websocket, app)
            group = consumer_group(app, websocket.query_params.get("group_id"))
            # Subscribe before accepting: once the client's handshake completes, the subscription is
            # positioned, so the client sees every event sent from then on.
            subscription = await self._bus.subscribe([events_topic(app)], group=group)
        except HawserError as error:
            await _deny(websocket, error)
            return
        OPEN_SOCKETS.inc()
        try:
            async with subscription:
                try:
                    await websocket.accept()
                except (WebSocketDisconnect, OSError):
                    return
                log.info("websocket for %s opened by %s (group %s)", app, principal.user, group)
                await _stream(websocket, subscription, self._buffer, committing=group is not None,
                              buffer_bytes=self._buffer_bytes, application_uid=application.uid)
        finally:
            # Only once the subscription is closed (its group left, its offsets committed).
            OPEN_SOCKETS.dec()
            log.info("websocket for %s closed", app)

    async def _authorize(self, websocket: WebSocket, app: str) -> tuple[Principal, ApplicationInfo]:
        """At least the reader role on `app`, within the token's scopes. An unknown application is
        refused like a forbidden one, so nobody learns which applications exist."""
        credential = credential_from(
            websocket.headers.get("authorization"), websocket.query_params.get("token")
        )
        principal = await self._users.authenticate_bearer(credential.token)
        if credential.user is not None and credential.user != principal.user:
            raise BadCredentials("the access token does not belong to that user")
        application = await authorize_reader(self._store, principal, app)
        return principal, application


async def _deny(websocket: WebSocket, error: HawserError) -> None:
    """Refuse the handshake with an HTTP problem reply; servers without the denial-response
    extension get a bare close instead (which they turn into a 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem_for(error, API_STATUS))
    else:
        await websocket.close(code=1008, reason=error.code)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close unless the client went away first (then there is nobody to tell)."""
    with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, OSError):
        await websocket.close(code=code, reason=reason)


async def _stream(
    websocket: WebSocket, subscription: Subscription, buffer: int, *, committing: bool,
    buffer_bytes: int = BUFFER_BYTES, application_uid: str | None = None,
) -> None:
    """Run pump, forwarder and watcher until the client leaves or the bus stops."""
    queue = DeliveryBuffer(buffer, buffer_bytes)
    outcome: list[tuple[int, str]] = []  # the close code and reason the pump decided on

    async with anyio.create_task_group() as tasks:

        async def pump() -> None:
            try:
                async for delivery in subscription:
                    uid = delivery.event.attributes.get("applicationuid")
                    if application_uid is not None and uid != application_uid:
                        # Deleted and created again under the same name: not what was authorized.
                        log.warning("websocket: an event of another application %s; closing", uid)
                        outcome.append((CLOSE_APP_GONE, "application deleted"))
                        return
                    await queue.put(delivery)
                outcome.append((CLOSE_GOING_AWAY, "event bus closed"))
            except UnknownTopic:
                outcome.append((CLOSE_APP_GONE, "application deleted"))
            except HawserError as error:
                log.warning("websocket: event bus failed: %s", error.detail)
                outcome.append((CLOSE_BUS_FAILED, "event bus unavailable"))
            finally:
                queue.close()

        async def forward() -> None:
            try:
                gone = await _forward(websocket, subscription, queue, committing=committing)
                if not gone:
                    code, reason = outcome[0] if outcome else (CLOSE_GOING_AWAY, "")
                    await _close(websocket, code, reason)
            finally:
                tasks.cancel_scope.cancel()

        async def watch() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass  # applications have nothing to say on this socket; ignore what they send
            tasks.cancel_scope.cancel()

        tasks.start_soon(pump, name="websocket-pump")
        tasks.start_soon(forward, name="websocket-forward")
        tasks.start_soon(watch, name="websocket-watch")


async def _forward(
    websocket: WebSocket, subscription: Subscription, deliveries: DeliveryBuffer, *, committing: bool,
) -> bool:
    """Send every delivery as a structured CloudEvent; commit what was sent (for a group: the last
    delivery of each partition, when the buffer drains or every `COMMIT_EVERY` frames, and when
    leaving). Deliveries of a partition this member no longer holds are dropped. Returns True if
    the client went away."""
    sent: dict[tuple[str, int], Delivery] = {}
    since_commit = 0
    try:
        while (delivery := await deliveries.get()) is not None:
            tp = (delivery.topic, delivery.partition)
            if not subscription.holds(*tp):
                DROPPED_MOVED.inc()
                if tp in sent:  # what was sent of it counts, if the bus still lets us say so
                    await _commit(subscription, {tp: sent.pop(tp)})
                continue
            try:
                await websocket.send_text(delivery.event.to_json())
            except (WebSocketDisconnect, OSError):
                return True
            FRAMES_SENT.inc()
            if not committing:
                continue
            sent[tp] = delivery
            since_commit += 1
            if since_commit >= COMMIT_EVERY or len(deliveries) == 0:
                await _commit(subscription, sent)
                since_commit = 0
        return False
    finally:
        if sent:  # also when cancelled (the client left): shielded, but bounded in time
            with anyio.move_on_after(FINAL_COMMIT_S, shield=True):
                await _commit(subscription, sent)


async def _commit(subscription: Subscription, sent: dict[tuple[str, int], Delivery]) -> None:
    """Commit the last sent delivery of each partition. A failed commit only means some events may be
    sent again to the group, so it is logged, not fatal."""
    pending = list(sent.values())
    sent.clear()
    for delivery in pending:
        try:
            await subscription.commit(delivery)
        except HawserError as error:
            log.warning("websocket: commit failed (events may be delivered again): %s", error.detail)


__all__ = ["PATH", "Memberships", "routes"]
