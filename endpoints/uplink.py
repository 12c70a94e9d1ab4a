"""The pure core of a device uplink: credentials and publish parameters, parsed and validated.

Nothing here does I/O or awaits. Every protocol adapter turns its frame into a `DeviceCredentials`
and an `Uplink` with these functions, so that names are validated the same way everywhere. Wire
contract as Drogue: Basic user `<device>@<app>` (or `<alias>@<app>`, `<username>@<app>`), query
`as`, `ct`, `data_schema`, `application`, `device`.

The user is split on its LAST `@`. Drogue splits on the first one and percent-decodes the device
part; since application names cannot hold an `@`, splitting on the last accepts every user Drogue
accepts (a percent-encoded `dev%40x@app` is decoded to device `dev@x` here too) and also a raw
`dev@x@app`. Names with control characters or over `MAX_NAME_LENGTH` are refused as bad
credentials before any lookup.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from auth.devices import DeviceCredentials
from hawser.errors import BadCredentials, BadRequest, InvalidName, MissingCredentials

#: Longest channel, device, application or user name accepted.
MAX_NAME_LENGTH = 256
#: Longest password accepted; bounds the work a KDF run can be made to do.
MAX_PASSWORD_LENGTH = 1024
#: Longest wait for a command a device may ask for (`ct`), in seconds.
MAX_COMMAND_TIMEOUT_S = 3600

# C0 and C1 control characters, DEL, and every Unicode whitespace character.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\s]")
# C0 and C1 control characters and DEL: never part of a name a device logs in with.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Uplink:
    """One message a device sends: where it goes and what it carries."""

    channel: str
    #: The device a gateway publishes for; None when the device publishes as itself.
    as_device: str | None = None
    content_type: str | None = None
    data_schema: str | None = None
    #: Seconds the device will wait for a command in the reply (`ct`); None if it will not.
    command_timeout: int | None = None


def validate_name(kind: str, value: str) -> str:
    """`value` if it is a usable name: not empty, bounded, no control characters or whitespace."""
    if not value:
        raise InvalidName(f"empty {kind}")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidName(f"{kind} longer than {MAX_NAME_LENGTH} characters")
    if _FORBIDDEN.search(value):
        raise InvalidName(f"{kind} contains control or whitespace characters")
    return value


def check_login_name(kind: str, value: str) -> str:
    """`value` if it may be looked up: not empty, at most `MAX_NAME_LENGTH`, no control character
    (a NUL would even break the PostgreSQL driver); else BadCredentials."""
    if not value:
        raise BadCredentials(f"empty {kind}")
    if len(value) > MAX_NAME_LENGTH:
        raise BadCredentials(f"{kind} longer than {MAX_NAME_LENGTH} characters")
    if _CONTROL.search(value):
        raise BadCredentials(f"{kind} contains control characters")
    return value


def decode_device(device: str) -> str:
    """Percent-decode a device part holding `%` when it decodes to valid UTF-8 (as Drogue does);
    otherwise keep it as given."""
    if "%" not in device:
        return device
    try:
        return unquote(device, errors="strict")
    except UnicodeDecodeError:
        return device


def split_user(user: str, default_application: str | None = None) -> tuple[str, str]:
    """`device@app` → (`app`, `device`), split on the LAST `@` (application names never hold one),
    the device part percent-decoded (`decode_device`). Without `@`, `default_application` (the
    `application` query parameter, as Drogue) is used if given, and the user is taken as it is.
    Raises BadCredentials for a malformed user or names `check_login_name` refuses."""
    device, at, application = user.rpartition("@")
    if at:
        device = decode_device(device)
    else:
        if not default_application:
            raise BadCredentials("user name must be <device>@<application>")
        device, application = user, default_application
    if not device or not application:
        raise BadCredentials("user name must be <device>@<application>")
    return check_login_name("application", application), check_login_name("device", device)


def parse_basic_auth(
    authorization: str | None, *, default_application: str | None = None, device: str | None = None
) -> DeviceCredentials:
    """The credentials of an HTTP `Authorization: Basic <base64(user:password)>` header (CoAP's
    option 4209 carries the same text). `device` (the `device` query parameter) makes the user
    the username of a `user` credential of that device."""
    if authorization is None or not authorization.strip():
        raise MissingCredentials()
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise BadCredentials("expected HTTP Basic credentials")
    try:
        decoded = binascii.a2b_base64(token.strip().encode("ascii"), strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadCredentials("Basic credentials are not valid base64 of UTF-8 text") from None
    user, colon, password = decoded.partition(":")
    if not colon:
        raise BadCredentials("Basic credentials without ':'")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadCredentials("password too long")
    application, name = split_user(user, default_application)
    if device:
        check_login_name("device", device)
    return DeviceCredentials(application=application, user=name, password=password, device=device or None)


def parse_command_timeout(raw: str | None) -> int | None:
    """`ct` (Drogue's alias `commandTimeout`): whole seconds, 0 to `MAX_COMMAND_TIMEOUT_S`;
    absent or empty means no wait."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest("ct must be a whole number of seconds")
    value = int(raw)
    if value > MAX_COMMAND_TIMEOUT_S:
        raise BadRequest(f"ct must be at most {MAX_COMMAND_TIMEOUT_S} seconds")
    return value


def parse_uplink(
    channel: str,
    as_device: str | None,
    query: Mapping[str, str],
    content_type: str | None,
) -> Uplink:
    """Validate an uplink's parameters. `as_device` comes from the path (HTTP, CoAP) or the topic
    (MQTT); the `as` query parameter may name it too, and the two must then agree."""
    validate_name("channel", channel)
    as_query = query.get("as") or None
    as_path = as_device or None
    if as_path is not None and as_query is not None and as_path != as_query:
        raise BadRequest("the device in the path and the 'as' parameter differ")
    target = as_path if as_path is not None else as_query
    if target is not None:
        validate_name("as-device", target)
    data_schema = query.get("data_schema") or None
    if data_schema is not None and _FORBIDDEN.search(data_schema):
        raise BadRequest("data_schema contains control or whitespace characters")
    return Uplink(
        channel=channel,
        as_device=target,
        content_type=content_type or None,
        data_schema=data_schema,
        command_timeout=parse_command_timeout(query.get("ct", query.get("commandTimeout"))),
    )


__all__ = [
    "MAX_COMMAND_TIMEOUT_S",
    "MAX_NAME_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "DeviceCredentials",
    "Uplink",
    "check_login_name",
    "decode_device",
    "parse_basic_auth",
    "parse_command_timeout",
    "parse_uplink",
    "split_user",
    "validate_name",
]
