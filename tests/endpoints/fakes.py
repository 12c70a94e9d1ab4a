"""A recording `EventBus` for the in-process layers of the endpoint tests (never in the product):
keeps every send, or refuses with `BusUnavailable` while `down` is set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hawser.bus.base import Subscription
from hawser.errors import BusUnavailable
from hawser.events import CloudEvent


@dataclass
class RecordingBus:
    sent: list[tuple[str, CloudEvent, str]] = field(default_factory=list)
    down: bool = False
    retry_after: int = 7

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def ensure_topic(self, topic: str) -> None:
        pass

    async def delete_topic(self, topic: str) -> None:
        pass

    async def send(self, topic: str, event: CloudEvent, key: str) -> None:
        if self.down:
            raise BusUnavailable("the recording bus is down", retry_after=self.retry_after)
        self.sent.append((topic, event, key))

    async def subscribe(self, topics: Sequence[str], group: str | None = None) -> Subscription:
        raise NotImplementedError("the recording bus only records sends")
