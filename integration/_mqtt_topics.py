"""Which topic filters the MQTT integration serves, and what an application may publish. Pure: no I/O.

Subscriptions are Drogue's: `app/<application>` (also `a/` and `application/`, which Drogue accepts
too), optionally shared as `$share/<group>/app/<application>` (Drogue also reads the misspelt
`$shared/`). Events go out on the filter without its share prefix. Wildcards are refused, as Drogue
does, with "wildcard subscriptions not supported"; a name that cannot be an application is refused
like an application the user may not read (0x87), so nobody learns which names exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hawser.mqtt.errors import ProtocolError
from hawser.mqtt.packets import Reason
from hawser.mqtt.topics import check_topic_filter
from registry.names import is_application_name

#: Prefixes Drogue's integration takes for an application's events (`mqtt-integration/src/service/session.rs`).
APP_PREFIXES = frozenset({"app", "a", "application"})
SHARE_PREFIXES = frozenset({"$share", "$shared"})
#: The same rule as a WebSocket `group_id` (printable, no spaces, bounded); `/`, `+` and `#` cannot
#: reach here, MQTT splits on the first and refuses the others in a share name.
_GROUP = re.compile(r"[\x21-\x7e]{1,200}")


@dataclass(frozen=True, slots=True)
class AppFilter:
    """A subscription to one application's events."""

    application: str
    #: The share name of `$share/<group>/...`, None for a plain subscription.
    share: str | None
    #: The topic name events are published on (the filter without its share prefix).
    topic: str

    def bus_group(self) -> str | None:
        """The bus consumer group: namespaced by application (`mqtt:<app>:<share>`), so that a user
        of another application choosing the same share name can never join (and rebalance) it. `:`
        cannot appear in an application name, so the mapping is one-to-one."""
        return None if self.share is None else f"mqtt:{self.application}:{self.share}"


def match_app_filter(topic_filter: str) -> AppFilter | Reason:
    """The application a SUBSCRIBE filter asks for, or the SUBACK reason code refusing it."""
    try:
        check_topic_filter(topic_filter)
    except ProtocolError:
        return Reason.TOPIC_FILTER_INVALID
    levels = topic_filter.split("/")
    share: str | None = None
    if levels[0] in SHARE_PREFIXES:
        if len(levels) < 3 or not _GROUP.fullmatch(levels[1]) or "+" in levels[1] or "#" in levels[1]:
            return Reason.TOPIC_FILTER_INVALID
        share, levels = levels[1], levels[2:]
    if any("+" in level or "#" in level for level in levels):
        return Reason.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
    if len(levels) != 2 or levels[0] not in APP_PREFIXES:
        return Reason.TOPIC_FILTER_INVALID
    application = levels[1]
    if not is_application_name(application):
        return Reason.NOT_AUTHORIZED
    return AppFilter(application, share, "/".join(levels))


@dataclass(frozen=True, slots=True)
class CommandTopic:
    """`command/<application>/<device>/<command>`: a command for a device (Drogue's topic)."""

    application: str
    device: str
    command: str


def match_command_topic(topic: str) -> CommandTopic | None:
    """The command a PUBLISH topic names, or None for any other topic (Drogue refuses those as an
    unsupported operation)."""
    levels = topic.split("/")
    if len(levels) != 4 or levels[0].lower() != "command" or not all(levels[1:]):
        return None
    return CommandTopic(levels[1], levels[2], levels[3])


__all__ = ["APP_PREFIXES", "AppFilter", "CommandTopic", "match_app_filter", "match_command_topic"]
