"""Which names the registry accepts: applications, devices (and their aliases), and the free-form
identifiers people pick (user names, label keys). Pure functions, no I/O.

Applications are DNS-1123 labels (they become Kafka topic names and URL path segments); devices may
use most printable characters, as Drogue allows, but never '/', whitespace or control characters.
Nothing with a control character or beyond its column's length ever reaches the database (PostgreSQL
refuses NUL and over-long strings with errors that are not the client's to see).
"""

from __future__ import annotations

import re

from hawser.errors import InvalidName

_APP = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DEVICE_BAD = re.compile(r"[/\s\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_DEVICE_NAME = 256
#: User names (members, token owners), credential usernames, label and annotation keys.
MAX_IDENTIFIER = 256


def is_application_name(name: str) -> bool:
    return _APP.fullmatch(name) is not None


def is_device_name(name: str) -> bool:
    return 1 <= len(name) <= MAX_DEVICE_NAME and not _DEVICE_BAD.search(name)


def is_identifier(text: str, max_length: int = MAX_IDENTIFIER) -> bool:
    """1 to `max_length` characters, none of them a control character."""
    return 1 <= len(text) <= max_length and not _CONTROL.search(text)


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def check_application_name(name: str) -> str:
    """Return `name` if it is a valid application name, else raise `InvalidName`."""
    if not is_application_name(name):
        raise InvalidName(
            f"invalid application name {name[:80]!r}: 1 to 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_device_name(name: str, what: str = "device name") -> str:
    """Return `name` if it is a valid device name (or alias), else raise `InvalidName`."""
    if not is_device_name(name):
        raise InvalidName(
            f"invalid {what} {name[:80]!r}: 1 to {MAX_DEVICE_NAME} characters, "
            "no '/', whitespace or control characters"
        )
    return name


def check_identifier(text: str, what: str) -> str:
    """Return `text` if it is 1 to 256 characters without control characters, else raise."""
    if not is_identifier(text):
        raise InvalidName(f"invalid {what} {text[:80]!r}: 1 to {MAX_IDENTIFIER} characters, "
                          "no control characters")
    return text
