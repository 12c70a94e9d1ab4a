"""One request waiting for one command: how request/response protocols (CoAP, and HTTP with `ct`)
take commands, as Drogue's endpoints do when a device asks to wait `ct` seconds.

The waiter is a `CommandSink` registered in `DeviceSessions` for the length of the wait, subscribed
to the device the request published for (the device itself, or the one a gateway published as), so
whatever hands commands to sessions (the router, when it lands) reaches it like an MQTT session.
It takes the first command and refuses the rest (best effort, as Drogue).
"""

from __future__ import annotations

import asyncio

from command.sessions import Command, DeviceSessions, InboxFilter, InboxScope


class CommandWaiter:
    """A `CommandSink` holding at most one command."""

    __slots__ = ("_future", "application", "device")

    client_id: str | None = None  # a request is never taken over

    def __init__(self, application: str, device: str) -> None:
        self.application = application
        self.device = device
        self._future: asyncio.Future[Command] = asyncio.get_running_loop().create_future()

    def deliver(self, topic: str, command: Command) -> bool:
        if self._future.done():
            return False
        self._future.set_result(command)
        return True

    def take_over(self) -> None:  # pragma: no cover - never registered with a client id
        pass

    async def wait(self, seconds: float) -> Command | None:
        """The command if one arrives within `seconds`, else None."""
        if self._future.done():
            return self._future.result()
        if seconds <= 0:
            return None
        try:
            async with asyncio.timeout(seconds):
                return await asyncio.shield(self._future)
        except TimeoutError:
            return None


async def wait_for_command(
    sessions: DeviceSessions, application: str, device: str, target: str, seconds: float
) -> Command | None:
    """Wait up to `seconds` for a command for `target`, on behalf of the connected
    `device` (the same device, or a gateway publishing for `target`). None when none came."""
    if seconds <= 0:
        return None
    waiter = CommandWaiter(application, device)
    sessions.register(waiter)
    try:
        inbox = InboxFilter(InboxScope.SELF) if target == device else InboxFilter(InboxScope.DEVICE, target)
        sessions.subscribe(waiter, inbox)
        return await waiter.wait(seconds)
    finally:
        sessions.unregister(waiter)


__all__ = ["CommandWaiter", "wait_for_command"]
