"""Which application and device names the registry accepts. Pure functions, no I/O.

Applications are DNS-1123 labels (they become Kafka topic names and URL path segments); devices may
use most printable characters, as Drogue allows, but never '/', whitespace or control characters.
"""

from __future__ import annotations

import re

from hawser.errors import InvalidName

_APP = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DEVICE_BAD = re.compile(r"[/\s\x00-\x1f\x7f]")
MAX_DEVICE_NAME = 256


def check_application_name(name: str) -> str:
    """Return `name` if it is a valid application name, else raise `InvalidName`."""
    if not _APP.fullmatch(name):
        raise InvalidName(
            f"invalid application name {name[:80]!r}: 1 to 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_device_name(name: str) -> str:
    """Return `name` if it is a valid device name, else raise `InvalidName`."""
    if not 1 <= len(name) <= MAX_DEVICE_NAME or _DEVICE_BAD.search(name):
        raise InvalidName(
            f"invalid device name {name[:80]!r}: 1 to {MAX_DEVICE_NAME} characters, "
            "no '/', whitespace or control characters"
        )
    return name
