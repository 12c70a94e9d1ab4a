"""The device endpoint's topics as pure decisions: what a PUBLISH topic means (`<channel>` or
`<channel>/<as-device>`) and which SUBSCRIBE filters are command inboxes. Nothing here does I/O.

Drogue's default dialect (`mqtt-endpoint/src/service/session/dialect/mod.rs`) reads `<channel>` and
`<channel>/<device>`; Hawser reads every level after the channel as the device, as its HTTP endpoint
reads `/v1/{channel}/{as-device...}`, so that a device named `th/1` can be published for. Empty
levels are refused (Drogue would read `/x` as the empty channel).
"""

from __future__ import annotations

import re

from command.sessions import InboxFilter, InboxScope
from endpoints.uplink import Uplink, parse_uplink
from hawser.errors import InvalidName
from hawser.mqtt.packets import Publish

_INBOX = "command/inbox/"
#: CloudEvent attribute names (CloudEvents 1.0 section 3.1.1: a-z and 0-9, at most 20 recommended).
_ATTRIBUTE = re.compile(r"[a-z0-9]{1,20}")
#: Names the JSON event format gives a meaning of its own.
_RESERVED = frozenset({"data"})


def match_publish_topic(topic: str) -> tuple[str, str | None] | None:
    """`(channel, as_device)` for `<channel>` and `<channel>/<as-device>`, None for a topic that
    is neither (empty, an empty level, a leading or trailing `/`)."""
    channel, slash, rest = topic.partition("/")
    if not channel:
        return None
    if not slash:
        return channel, None
    if not rest or "" in rest.split("/"):
        return None
    return channel, rest


def match_inbox_filter(topic_filter: str) -> InboxFilter | None:
    """The command inbox a SUBSCRIBE filter names, None for any other filter (refused):
    `command/inbox/#` (and Drogue's equivalent `command/inbox/+/#`): this device and every device it
    is a gateway for; `command/inbox//#`: this device only; `command/inbox/<device>/#`: one device
(whose name may hold `/`, as in `match_publish_topic`).
    The filter must already be a valid MQTT filter (`hawser.mqtt.topics.check_topic_filter`)."""
    if not topic_filter.startswith(_INBOX):
        return None
    rest = topic_filter[len(_INBOX) :]
    if rest in ("#", "+/#"):
        return InboxFilter(InboxScope.ALL)
    if not rest.endswith("/#"):
        return None
    device = rest[:-2]
    if not device:
        return InboxFilter(InboxScope.SELF)
    if "+" in device or "#" in device or "" in device.split("/"):
        return None
    return InboxFilter(InboxScope.DEVICE, device)


def publish_uplink(publish: Publish) -> tuple[Uplink, dict[str, str]]:
    """The uplink a PUBLISH carries and the CloudEvent extension attributes of its MQTT 5 user
    properties. Raises InvalidName for a topic that is not `<channel>[/<as-device>]` or names
    that `parse_uplink` refuses. The content type property becomes `datacontenttype`.

    User properties whose name is a valid CloudEvent attribute name become extensions (the first
    of a repeated name wins); others are ignored rather than refused, since client libraries add
    their own (`traceId`, `x-...`), and an extension can never replace a core or Drogue attribute
    (`hawser.events.event_template`). Payload format indicator, response topic, correlation data
    and message expiry mean nothing to an event and are ignored."""
    match = match_publish_topic(publish.topic)
    if match is None:
        raise InvalidName("the topic must be <channel> or <channel>/<as-device>")
    properties = publish.properties
    uplink = parse_uplink(match[0], match[1], {}, properties.content_type)
    extensions: dict[str, str] = {}
    for name, value in properties.user_properties:
        if _ATTRIBUTE.fullmatch(name) and name not in _RESERVED:
            extensions.setdefault(name, value)
    return uplink, extensions


__all__ = ["match_inbox_filter", "match_publish_topic", "publish_uplink"]
