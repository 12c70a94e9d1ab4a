"""Small helpers every test module may use: polling with a deadline, free ports, unique names.

`eventually` is how a test waits for something that happens elsewhere (another task, a server, Kafka)
without sleeping a fixed time: it polls a predicate until it holds, and fails with a clear message when
the deadline passes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from services import free_port as free_port  # one definition, shared with the fixtures and benches

T = TypeVar("T")


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = ..., *, interval: float = ..., message: str = ...
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T], timeout: float = ..., *, interval: float = ..., message: str = ...
) -> T: ...


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    message: str = "",
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    An `AssertionError` raised by the predicate counts as "not yet" (so a block of asserts can be
    polled); it is re-raised as the cause when the deadline passes. Other exceptions propagate at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_error: AssertionError | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            last, last_error = result, None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"not true within {timeout:.1f}s: {what} (last result: {last!r})") from last_error
        await asyncio.sleep(interval)


def unique_name(prefix: str = "t") -> str:
    """A fresh name for a topic, application, device or group, so tests never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
