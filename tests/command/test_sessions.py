"""The registry of device sessions: takeover only within the same device and client id, inbox
subscriptions, and which session gets a command on which topic (Drogue's topic encoder)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from command.sessions import Command, DeviceSessions, InboxFilter, InboxScope, inbox_topic

ALL = InboxFilter(InboxScope.ALL)
SELF = InboxFilter(InboxScope.SELF)


@dataclass(eq=False)
class Sink:
    application: str
    device: str
    client_id: str | None = None
    accept: bool = True
    got: list[tuple[str, Command]] = field(default_factory=list)
    taken_over: int = 0

    def deliver(self, topic: str, command: Command) -> bool:
        if self.accept:
            self.got.append((topic, command))
        return self.accept

    def take_over(self) -> None:
        self.taken_over += 1


def test_inbox_filter_names_a_device_exactly_for_the_device_scope() -> None:
    assert InboxFilter(InboxScope.DEVICE, "d").device == "d"
    with pytest.raises(ValueError, match="device"):
        InboxFilter(InboxScope.DEVICE)
    with pytest.raises(ValueError, match="device"):
        InboxFilter(InboxScope.ALL, "d")


def test_same_client_id_of_the_same_device_takes_over() -> None:
    sessions = DeviceSessions()
    old, new = Sink("a", "d", "c1"), Sink("a", "d", "c1")
    assert sessions.register(old) is None
    sessions.subscribe(old, ALL)
    assert sessions.register(new) is old
    assert (old.taken_over, new.taken_over) == (1, 0)
    assert old not in sessions
    assert new in sessions
    assert sessions.filters(old) == frozenset()
    assert sessions.sessions_of("a", "d") == {new}
    # The old one unregistering late (its handler ending) does not remove the new one.
    sessions.unregister(old)
    assert new in sessions
    assert sessions.sessions_of("a", "d") == {new}
    newest = Sink("a", "d", "c1")
    assert sessions.register(newest) is new  # the index by client id still points at `new`


@pytest.mark.parametrize(
    "other",
    [Sink("a", "e", "c1"), Sink("b", "d", "c1"), Sink("a", "d", "c2"), Sink("a", "d", None)],
    ids=["other device", "other application", "other client id", "no client id"],
)
def test_nothing_else_takes_over(other: Sink) -> None:
    sessions = DeviceSessions()
    first = Sink("a", "d", "c1")
    sessions.register(first)
    assert sessions.register(other) is None
    assert first.taken_over == 0
    assert first in sessions
    assert other in sessions
    assert len(sessions) == 2


def test_sessions_without_client_id_are_never_taken_over() -> None:
    sessions = DeviceSessions()
    one, two = Sink("a", "d"), Sink("a", "d")
    sessions.register(one)
    sessions.register(two)
    assert one.taken_over == two.taken_over == 0
    assert sessions.sessions_of("a", "d") == {one, two}
    sessions.unregister(one)
    sessions.unregister(one)  # twice is harmless
    assert sessions.sessions_of("a", "d") == {two}
    sessions.unregister(two)
    assert len(sessions) == 0
    assert sessions.sessions_of("a", "d") == frozenset()


def test_subscribe_needs_a_registered_session_and_unsubscribe_says_whether_it_was() -> None:
    sessions = DeviceSessions()
    sink = Sink("a", "d")
    assert not sessions.subscribe(sink, ALL)
    sessions.register(sink)
    assert sessions.subscribe(sink, ALL)
    assert sessions.filters(sink) == {ALL}
    assert sessions.unsubscribe(sink, ALL)
    assert not sessions.unsubscribe(sink, ALL)
    assert not sessions.unsubscribe(Sink("a", "d"), ALL)


@pytest.mark.parametrize(
    ("target", "via", "session_device", "topic"),
    [
        ("d", ALL, "d", "command/inbox//set"),
        ("d", SELF, "d", "command/inbox//set"),
        ("d", InboxFilter(InboxScope.DEVICE, "d"), "d", "command/inbox/d/set"),
        ("th/1", ALL, "gw", "command/inbox/th/1/set"),
        ("th/1", InboxFilter(InboxScope.DEVICE, "th/1"), "gw", "command/inbox/th/1/set"),
    ],
)
def test_inbox_topic(target: str, via: InboxFilter, session_device: str, topic: str) -> None:
    assert inbox_topic(Command("a", target, "set"), via, session_device) == topic


def test_deliver_to_the_device_and_its_gateways() -> None:
    sessions = DeviceSessions()
    own_all, own_self, own_named = Sink("a", "d", "1"), Sink("a", "d", "2"), Sink("a", "d", "3")
    gw_all, gw_named, gw_other = Sink("a", "gw", "1"), Sink("a", "gw2", "1"), Sink("a", "gw3", "1")
    not_listed, other_app, unsubscribed = Sink("a", "gw4", "1"), Sink("b", "d", "1"), Sink("a", "d", "4")
    for sink in (own_all, own_self, own_named, gw_all, gw_named, gw_other, not_listed, other_app, unsubscribed):
        sessions.register(sink)
    sessions.subscribe(own_all, ALL)
    sessions.subscribe(own_all, InboxFilter(InboxScope.DEVICE, "d"))  # both ways: once, on `//`
    sessions.subscribe(own_self, SELF)
    sessions.subscribe(own_named, InboxFilter(InboxScope.DEVICE, "d"))
    sessions.subscribe(gw_all, ALL)
    sessions.subscribe(gw_named, InboxFilter(InboxScope.DEVICE, "d"))
    sessions.subscribe(gw_other, InboxFilter(InboxScope.DEVICE, "e"))
    sessions.subscribe(gw_other, SELF)
    sessions.subscribe(not_listed, ALL)
    sessions.subscribe(other_app, ALL)
    command = Command("a", "d", "set", b"1")
    assert sessions.deliver(command, gateways=("gw", "gw2", "gw3", "d")) == 5
    assert own_all.got == [("command/inbox//set", command)]
    assert own_self.got == [("command/inbox//set", command)]
    assert own_named.got == [("command/inbox/d/set", command)]
    assert gw_all.got == [("command/inbox/d/set", command)]
    assert gw_named.got == [("command/inbox/d/set", command)]
    assert gw_other.got == not_listed.got == other_app.got == unsubscribed.got == []


def test_deliver_counts_only_sessions_that_took_it() -> None:
    sessions = DeviceSessions()
    full, fine = Sink("a", "d", "1", accept=False), Sink("a", "d", "2")
    for sink in (full, fine):
        sessions.register(sink)
        sessions.subscribe(sink, ALL)
    assert sessions.deliver(Command("a", "d", "x")) == 1
    assert sessions.deliver(Command("a", "nobody", "x")) == 0
