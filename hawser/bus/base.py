"""The `EventBus` protocol: what every backend (Kafka, the embedded log) promises.

Contract, checked by one test suite against every implementation (tests/bus/test_contract.py):
- `send` returns only once the bus holds the event durably; it raises `BusUnavailable` (never hangs
  longer than the configured send timeout) when it cannot.
- Events with the same key keep their order (they land on one partition).
- `subscribe(..., group=None)` sees every event sent after `subscribe` returned, from all partitions.
- `subscribe(..., group="g")`: members of one group split the partitions between them; a group
  resumes after the last committed delivery, and a brand-new group starts at the end of the topic
  as it stood when the group first joined (that position is committed at once, so nothing sent
  after the first join is lost to the group).
- `subscribe` returns only once the subscription is positioned, so nothing sent afterwards is missed.
- Neither `send` nor `subscribe` creates a topic: both raise `UnknownTopic` for one that does not exist
  (topics are created with their application, by `ensure_topic`).
- Deleting a topic ends the subscriptions on it (their iteration raises `UnknownTopic`); they never go
  on to read a new topic of the same name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

from hawser.events import CloudEvent


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event as read from the bus, with the position needed to commit it."""

    topic: str
    partition: int
    offset: int
    key: str | None
    event: CloudEvent
    timestamp_ms: int


@runtime_checkable
class Subscription(Protocol):
    """An open consumer. Iterate for deliveries; `commit` records progress for a group."""

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    def holds(self, topic: str, partition: int) -> bool:
        """Whether this subscription still owns the partition. A delivery read ahead of a rebalance
        that moved its partition away should be dropped, not handed on: the new owner reads it again
        from the group's last commit. Always true without a group (until closed)."""
        ...

    async def commit(self, delivery: Delivery) -> None:
        """Mark `delivery` and everything before it in its partition as consumed (no-op without a
        group)."""
        ...

    async def aclose(self) -> None:
        """Leave the group (handing partitions to the other members) and release resources.
        Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class EventBus(Protocol):
    """Where devices' events go and where applications read them."""

    async def start(self) -> None:
        """Connect; raise `BusUnavailable` if the bus cannot be reached at all."""
        ...

    async def aclose(self) -> None:
        """Flush what is in flight, then close. Idempotent."""
        ...

    async def ensure_topic(self, topic: str) -> None:
        """Create the topic if it does not exist (with the configured partitions)."""
        ...

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic and its events if it exists."""
        ...

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        """Append durably; return only once acknowledged. Raises `BusUnavailable`, or `UnknownTopic`
        when the topic does not exist."""
        ...

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        """Open a positioned subscription (see the module docstring for group semantics)."""
        ...
