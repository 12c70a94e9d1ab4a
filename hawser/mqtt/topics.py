"""Topic names and topic filters: validity (MQTT 5 section 4.7) and matching. Pure.

CONTRACT (implemented by the codec work):
- `check_topic_name(name)`: not empty, no `+` or `#`, no U+0000, at most 65,535 UTF-8 bytes; else
  `ProtocolError(reason=Reason.TOPIC_NAME_INVALID)`. Returns the name.
- `check_topic_filter(text)`: not empty, `#` only as the whole last level, `+` only as a whole level,
  no U+0000; else `ProtocolError(reason=Reason.TOPIC_FILTER_INVALID)`. Returns it. A `$share/<group>/<filter>`
  needs a non-empty group without `+`, `#` or `/` and a valid filter after it.
- `split_shared(text) -> (group | None, filter)`: `$share/g/app/x` → ("g", "app/x"); others → (None, text).
- `matches(filter, name)`: MQTT matching, where wildcards at the first level do not match names
  starting with `$`.
"""

from __future__ import annotations

from hawser.mqtt.errors import ProtocolError
from hawser.mqtt.packets import MAX_UINT16, Reason

__all__ = ["check_topic_filter", "check_topic_name", "matches", "split_shared"]

_SHARE = "$share/"


def _utf8_length_ok(text: str) -> bool:
    # A str of at most 16,383 code points is at most 65,532 bytes: encode only the long ones. Strings
    # from the decoder are valid UTF-8; a caller's str could hold a lone surrogate, which is refused.
    try:
        return len(text) <= MAX_UINT16 // 4 or len(text.encode()) <= MAX_UINT16
    except UnicodeEncodeError:
        return False


def check_topic_name(name: str) -> str:
    if not name or "+" in name or "#" in name or "\x00" in name or not _utf8_length_ok(name):
        raise ProtocolError(f"invalid topic name {name[:100]!r}", Reason.TOPIC_NAME_INVALID)
    if not name.isascii():
        try:
            name.encode()
        except UnicodeEncodeError:
            raise ProtocolError("topic name is not valid UTF-8", Reason.TOPIC_NAME_INVALID) from None
    return name


def _filter_ok(text: str) -> bool:
    if not text or "\x00" in text:
        return False
    if "+" not in text and "#" not in text:
        return True
    levels = text.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def check_topic_filter(text: str) -> str:
    valid = _utf8_length_ok(text) and _filter_ok(text)
    if valid and not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            valid = False
    if valid and text.startswith(_SHARE):
        group, slash, topic_filter = text[len(_SHARE) :].partition("/")
        valid = bool(group and slash) and "+" not in group and "#" not in group and _filter_ok(topic_filter)
    if not valid:
        raise ProtocolError(f"invalid topic filter {text[:100]!r}", Reason.TOPIC_FILTER_INVALID)
    return text


def split_shared(text: str) -> tuple[str | None, str]:
    """`$share/<group>/<filter>` -> (group, filter); any other filter -> (None, filter). Call it on a
    filter `check_topic_filter` accepted."""
    if text.startswith(_SHARE):
        group, _, topic_filter = text[len(_SHARE) :].partition("/")
        return group, topic_filter
    return None, text


def matches(topic_filter: str, name: str) -> bool:
    """Whether `name` matches `topic_filter` (a shared subscription's filter is matched without its
    `$share/<group>/` prefix)."""
    _, topic_filter = split_shared(topic_filter)
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == name
    if name.startswith("$") and topic_filter[0] in "+#":
        return False  # [MQTT-4.7.2-1]: first-level wildcards do not match $-topics
    wanted = topic_filter.split("/")
    levels = name.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(wanted) == len(levels)
