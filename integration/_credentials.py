"""Where an application's credential comes from on a WebSocket handshake. Nothing here does I/O.

Browsers cannot set headers on a WebSocket, so besides `Authorization: Bearer <token>` a `token`
query parameter is accepted; Drogue's clients may also send `Authorization: Basic user:access-token`.
The header wins when both are present.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from hawser.errors import BadCredentials, BadRequest, MissingCredentials


@dataclass(frozen=True, slots=True)
class TokenCredential:
    """A bearer token, and for Basic the user it must belong to."""

    token: str
    user: str | None = None

    def __repr__(self) -> str:  # never show the token itself
        return f"TokenCredential(user={self.user!r})"


def credential_from(authorization: str | None, token_param: str | None) -> TokenCredential:
    """The credential of a handshake; raises `MissingCredentials` or `BadCredentials`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return TokenCredential(value)
        if scheme.lower() == "basic" and value:
            return _basic(value)
        raise BadCredentials("the Authorization header must be 'Bearer <token>' or 'Basic <user:token>'")
    if token_param:
        return TokenCredential(token_param)
    raise MissingCredentials("a token is required: 'Authorization: Bearer <token>' or '?token=<token>'")


def _basic(value: str) -> TokenCredential:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials("malformed Basic credentials") from None
    user, sep, token = decoded.partition(":")
    if not sep or not user or not token:
        raise BadCredentials("Basic credentials must be '<user>:<access token>'")
    return TokenCredential(token, user)


#: Printable, no spaces or control characters, bounded: Kafka accepts any string, but a group id
#: ends up in logs and in the embedded log's tables.
_GROUP_ID = re.compile(r"[\x21-\x7e]{1,200}")


def consumer_group(application: str, group_id: str | None) -> str | None:
    """The bus group of a socket: namespaced by application (`websocket:<app>:<group_id>`), so that a
    user of another application choosing the same `group_id` can never join (and rebalance) it.
    `:` cannot appear in an application name (a DNS label), so the mapping is one-to-one."""
    if group_id is None:
        return None
    if not _GROUP_ID.fullmatch(group_id):
        raise BadRequest("group_id must be 1 to 200 printable characters without spaces")
    return f"websocket:{application}:{group_id}"
