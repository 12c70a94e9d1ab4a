"""Subscriptions and in-process consumer groups of the embedded log.

A `Group` splits the partitions of its topics among its members (round robin in join order) and
rebalances when a member joins or leaves. A partition moves only once its previous holder stopped
reading it: the holder releases it at its next step of iteration (or when it closes, or after a
timeout), so the new owner starts from an offset that the old one can no longer move past. A group
with no member and no commit in flight is dropped (its offsets are on disk). Deleting a topic ends
the subscriptions on it. Nothing here does I/O; the bus passes in what it needs through `Log`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, Self

from hawser._resources import AsyncResource
from hawser.bus._embedded_store import TP
from hawser.bus.base import Delivery
from hawser.errors import UnknownTopic

log = logging.getLogger(__name__)


class Log(Protocol):
    """What a subscription needs from the bus."""

    def end(self, tp: TP) -> int: ...

    def partitions(self, topic: str) -> int: ...

    async def fetch(self, wanted: Sequence[tuple[TP, int]]) -> list[Delivery]: ...

    async def commit_offsets(self, group: str, offsets: Mapping[TP, int]) -> None: ...

    def detach(self, subscription: EmbeddedSubscription) -> None: ...

    def drop_group(self, group: Group) -> None: ...


class Group:
    """The members of one consumer group in this process and who holds which partition."""

    def __init__(self, name: str, log: Log, committed: dict[TP, int], *,
                 release_timeout_s: float = 30.0) -> None:
        self.name = name
        self._release_timeout_s = release_timeout_s
        self.committed = committed
        self._log = log
        self._members: list[EmbeddedSubscription] = []
        self._holder: dict[TP, EmbeddedSubscription] = {}
        self._target: dict[TP, EmbeddedSubscription] = {}
        self._timers: dict[TP, asyncio.TimerHandle] = {}
        #: Joins and commits in flight; the group is not dropped while any is.
        self.pinned = 0

    @property
    def empty(self) -> bool:
        return not self._members

    def drop_if_idle(self) -> None:
        if not self._members and not self.pinned:
            self._log.drop_group(self)

    def join(self, member: EmbeddedSubscription) -> None:
        self._members.append(member)
        self.rebalance()

    def leave(self, member: EmbeddedSubscription) -> None:
        if member in self._members:
            self._members.remove(member)
        for tp in member.owned | member.releasing:
            if self._holder.get(tp) is member:
                del self._holder[tp]
                self._cancel_timer(tp)
        member.owned.clear()
        member.releasing.clear()
        self.rebalance()
        self.drop_if_idle()

    def release(self, member: EmbeddedSubscription, tps: Iterable[TP]) -> None:
        """`member` stopped reading `tps`: hand each to its new owner."""
        for tp in tps:
            if self._holder.get(tp) is member:
                del self._holder[tp]
                self._cancel_timer(tp)
            new = self._target.get(tp)
            if new is not None and tp not in self._holder:
                self._grant(tp, new)

    def rebalance(self) -> None:
        target: dict[TP, EmbeddedSubscription] = {}
        turn = 0
        for topic in sorted({t for m in self._members for t in m.topics}):
            members = [m for m in self._members if topic in m.topics]
            for partition in range(self._log.partitions(topic)):
                target[(topic, partition)] = members[turn % len(members)]
                turn += 1
        self._target = target
        for tp, holder in list(self._holder.items()):
            if target.get(tp) is holder:
                if tp in holder.releasing:  # moved away and back before it was released
                    holder.releasing.discard(tp)
                    holder.owned.add(tp)
                    self._cancel_timer(tp)
            elif tp in holder.owned:
                holder.owned.discard(tp)
                holder.releasing.add(tp)
                holder.wake.set()
                self._cancel_timer(tp)
                self._timers[tp] = asyncio.get_running_loop().call_later(
                    self._release_timeout_s, self._expire, holder, tp)
        for tp, member in target.items():
            if tp not in self._holder:
                self._grant(tp, member)

    def _expire(self, member: EmbeddedSubscription, tp: TP) -> None:
        """A holder that does not step on within the timeout loses the partition anyway (Kafka's
        `max.poll.interval.ms`): it will not be given that partition's records any more."""
        if tp in member.releasing and self._holder.get(tp) is member:
            log.warning("group %s: a member held %s past %.0f s; moving it", self.name, tp,
                        self._release_timeout_s)
            member.releasing.discard(tp)
            member.positions.pop(tp, None)
            self.release(member, [tp])

    def _cancel_timer(self, tp: TP) -> None:
        timer = self._timers.pop(tp, None)
        if timer is not None:
            timer.cancel()

    def forget_topic(self, topic: str) -> None:
        """The topic was deleted: nobody holds its partitions, and a new topic of that name starts
        afresh for this group."""
        for tp in [tp for tp in self.committed if tp[0] == topic]:
            del self.committed[tp]
        for tp in [tp for tp in self._holder if tp[0] == topic]:
            member = self._holder.pop(tp)
            member.owned.discard(tp)
            member.releasing.discard(tp)
            member.positions.pop(tp, None)
            self._cancel_timer(tp)
        self._target = {tp: m for tp, m in self._target.items() if tp[0] != topic}

    def _grant(self, tp: TP, member: EmbeddedSubscription) -> None:
        self._holder[tp] = member
        member.owned.add(tp)
        member.positions[tp] = self.committed.get(tp, self._log.end(tp))
        member.wake.set()


class EmbeddedSubscription(AsyncResource):
    """An open consumer of the embedded log; a group member when `group` is set."""

    def __init__(self, log: Log, topics: Sequence[str], group: Group | None, *, batch: int) -> None:
        self.topics = frozenset(topics)
        self.group = group
        self.owned: set[TP] = set()
        self.releasing: set[TP] = set()
        self.positions: dict[TP, int] = {}
        self.wake = asyncio.Event()
        self._log = log
        self._batch = batch
        self._buffer: deque[Delivery] = deque()
        self._closed = False
        self._deleted: str | None = None
        if group is None:
            for topic in self.topics:
                for partition in range(log.partitions(topic)):
                    self.owned.add((topic, partition))
                    self.positions[(topic, partition)] = log.end((topic, partition))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._deleted is not None:
                raise UnknownTopic(f"the topic {self._deleted!r} was deleted")
            if self.releasing:
                self._release()
            while self._buffer:
                delivery = self._buffer.popleft()
                tp = (delivery.topic, delivery.partition)
                if tp in self.owned and self.positions.get(tp) == delivery.offset:
                    self.positions[tp] = delivery.offset + 1
                    return delivery
            self.wake.clear()
            wanted = [(tp, self.positions[tp]) for tp in sorted(self.owned)
                      if self.positions[tp] < self._log.end(tp)]
            if wanted:
                self._buffer.extend(await self._log.fetch(wanted))
            else:
                await self.wake.wait()

    def _release(self) -> None:
        released = set(self.releasing)
        self.releasing.clear()
        for tp in released:
            self.positions.pop(tp, None)
        self._buffer = deque(d for d in self._buffer if (d.topic, d.partition) not in released)
        if self.group is not None:
            self.group.release(self, released)

    def topic_deleted(self, topic: str) -> None:
        """The topic was deleted: this subscription ends (`UnknownTopic`) rather than read a new topic
        of the same name, which may belong to someone else."""
        self._deleted = topic
        for tp in [tp for tp in self.positions if tp[0] == topic]:
            self.owned.discard(tp)
            self.releasing.discard(tp)
            del self.positions[tp]
        self._buffer = deque(d for d in self._buffer if d.topic != topic)
        self.wake.set()

    def holds(self, topic: str, partition: int) -> bool:
        """Whether deliveries of this partition may still be handed on: False once it is being
        released to another member (it re-reads them from the last commit)."""
        return not self._closed and (topic, partition) in self.owned

    async def commit(self, delivery: Delivery) -> None:
        group = self.group
        if group is None:
            return
        tp = (delivery.topic, delivery.partition)
        if self._closed:
            log.warning("group %s: commit of %s@%d after the subscription closed is dropped (the "
                        "group may receive it again)", group.name, tp, delivery.offset)
            return
        if tp not in self.owned and tp not in self.releasing:
            return  # the partition moved on; its new owner re-reads from the last commit
        # In memory first, synchronously: a new owner granted from now on starts after it.
        group.committed[tp] = delivery.offset + 1
        group.pinned += 1
        try:
            await self._log.commit_offsets(group.name, {tp: delivery.offset + 1})
        finally:
            group.pinned -= 1
            group.drop_if_idle()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self.wake.set()
        if self.group is not None:
            self.group.leave(self)
        self._log.detach(self)
