"""The registry of device sessions connected to this instance: which connections each device holds,
which command inboxes they subscribed, and MQTT's takeover rule. Device endpoints register their
sessions here; the command router (to come) hands each command over with `deliver`.

Nothing here does I/O or awaits: a `CommandSink.deliver` must not block (best effort, as Drogue
delivers commands: a session that cannot take a command now drops it and says so).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Counter

DELIVERIES = Counter("hawser_command_deliveries", "Commands handed to device sessions, by outcome.", ["outcome"])
_DELIVERED = DELIVERIES.labels("delivered")
_DROPPED = DELIVERIES.labels("dropped")
_NO_SESSION = DELIVERIES.labels("no-session")


class InboxScope(enum.Enum):
    """What a command inbox subscription covers (Drogue's `DeviceFilter`)."""

    #: `command/inbox/#`: the device itself and every device it is a gateway for.
    ALL = "all"
    #: `command/inbox//#`: the device itself only.
    SELF = "self"
    #: `command/inbox/<device>/#`: one device (itself, or one it is a gateway for).
    DEVICE = "device"


@dataclass(frozen=True, slots=True)
class InboxFilter:
    scope: InboxScope
    #: The device of a DEVICE scope; None for the others.
    device: str | None = None

    def __post_init__(self) -> None:
        if (self.scope is InboxScope.DEVICE) != (self.device is not None):
            raise ValueError("a device is named exactly by a DEVICE inbox filter")


@dataclass(frozen=True, slots=True)
class Command:
    """One command for one device of an application."""

    application: str
    device: str
    name: str
    payload: bytes = field(default=b"", repr=False)
    content_type: str | None = None


class CommandSink(Protocol):
    """One connected session of a device, as the registry sees it."""

    @property
    def application(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def client_id(self) -> str | None:
        """The protocol's session identity (MQTT client id); None: never taken over."""
        ...

    def deliver(self, topic: str, command: Command) -> bool:
        """Hand `command` to the device on `topic` without blocking; False if it was dropped."""
        ...

    def take_over(self) -> None:
        """Another connection with the same device and client id authenticated: end this one."""
        ...


def inbox_topic(command: Command, via: InboxFilter, session_device: str) -> str:
    """The topic a command arrives on (Drogue's `DefaultCommandTopicEncoder`): the device part is
    empty when the command is for the connected device itself through `#` or `/#`, else named."""
    if via.scope is InboxScope.DEVICE or command.device != session_device:
        return f"command/inbox/{command.device}/{command.name}"
    return f"command/inbox//{command.name}"


class DeviceSessions:
    """Sessions by device and by client id, and each session's inbox subscriptions."""

    def __init__(self) -> None:
        self._by_client: dict[tuple[str, str, str], CommandSink] = {}
        self._by_device: dict[tuple[str, str], set[CommandSink]] = {}
        self._filters: dict[CommandSink, set[InboxFilter]] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def __contains__(self, sink: object) -> bool:
        return sink in self._filters

    def register(self, sink: CommandSink) -> CommandSink | None:
        """Add a session that has authenticated. A registered session of the same application,
        device and client id is taken over (told, and forgotten) and returned; sessions of other
        devices are never touched, whatever their client id."""
        old = None
        if sink.client_id is not None:
            key = (sink.application, sink.device, sink.client_id)
            old = self._by_client.get(key)
            if old is sink:
                return None
            if old is not None:
                self.unregister(old)
                old.take_over()
            self._by_client[key] = sink
        self._by_device.setdefault((sink.application, sink.device), set()).add(sink)
        self._filters[sink] = set()
        return old

    def unregister(self, sink: CommandSink) -> None:
        """Forget a session and its subscriptions; harmless if it was forgotten already (taken over)."""
        if self._filters.pop(sink, None) is None:
            return
        if sink.client_id is not None:
            key = (sink.application, sink.device, sink.client_id)
            if self._by_client.get(key) is sink:
                del self._by_client[key]
        device = (sink.application, sink.device)
        sessions = self._by_device.get(device)
        if sessions is not None:
            sessions.discard(sink)
            if not sessions:
                del self._by_device[device]

    def subscribe(self, sink: CommandSink, inbox: InboxFilter) -> bool:
        """Remember the subscription; False if the session is not registered (any more)."""
        filters = self._filters.get(sink)
        if filters is None:
            return False
        filters.add(inbox)
        return True

    def unsubscribe(self, sink: CommandSink, inbox: InboxFilter) -> bool:
        """Whether the session had that subscription."""
        filters = self._filters.get(sink)
        if filters is None or inbox not in filters:
            return False
        filters.discard(inbox)
        return True

    def filters(self, sink: CommandSink) -> frozenset[InboxFilter]:
        return frozenset(self._filters.get(sink, ()))

    def sessions_of(self, application: str, device: str) -> frozenset[CommandSink]:
        return frozenset(self._by_device.get((application, device), ()))

    def deliver(self, command: Command, gateways: Collection[str] = ()) -> int:
        """Hand `command` to every session subscribed to it: sessions of the device itself, and
        sessions of the devices in `gateways` (those the target's registry entry lists, which the
        router knows) subscribed to `#` or to the target by name. Each session gets it at most
        once. Returns how many sessions took it."""
        taken = offered = 0
        for holder in (command.device, *[g for g in gateways if g != command.device]):
            for sink in self._by_device.get((command.application, holder), ()):
                via = _matching(self._filters.get(sink, ()), command.device, own=holder == command.device)
                if via is None:
                    continue
                offered += 1
                if sink.deliver(inbox_topic(command, via, holder), command):
                    taken += 1
        if offered == 0:
            _NO_SESSION.inc()
        _DELIVERED.inc(taken)
        _DROPPED.inc(offered - taken)
        return taken


def _matching(filters: Collection[InboxFilter], target: str, *, own: bool) -> InboxFilter | None:
    """The subscription through which a session gets a command for `target` (`own`: the session is
    the target's): the non-device-specific one first, so a device subscribed both ways gets
    `command/inbox//<command>` once."""
    named = None
    for inbox in filters:
        if inbox.scope is InboxScope.ALL or (own and inbox.scope is InboxScope.SELF):
            return inbox
        if inbox.scope is InboxScope.DEVICE and inbox.device == target:
            named = inbox
    return named


__all__ = ["Command", "CommandSink", "DeviceSessions", "InboxFilter", "InboxScope", "inbox_topic"]
