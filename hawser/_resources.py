"""The one tiny base of everything Hawser opens and closes (as anyio's `AsyncResource`).

`async with` closes with `aclose()`, which subclasses keep idempotent; a `Startable` also starts on
entry. Subclasses implement only `aclose` (and `start`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class AsyncResource(ABC):
    @abstractmethod
    async def aclose(self) -> None:
        """Release everything; safe to call more than once."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Startable(AsyncResource):
    @abstractmethod
    async def start(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self
