"""Commands to devices: the registry of device sessions connected to this instance (`sessions`);
the command REST API and the router that hands each command to a session come later. Sits above
`auth` and below `endpoints` in the import order: endpoints register their sessions here."""

from __future__ import annotations

from command.sessions import Command, CommandSink, DeviceSessions, InboxFilter, InboxScope, inbox_topic
from command.waiter import CommandWaiter, wait_for_command

__all__ = [
    "Command",
    "CommandSink",
    "CommandWaiter",
    "DeviceSessions",
    "InboxFilter",
    "InboxScope",
    "inbox_topic",
    "wait_for_command",
]
