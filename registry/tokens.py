"""Hawser access tokens: their format, hashing and stored record. Pure, no I/O.

A token reads `hwsr_<id>_<secret>`: the id finds the row, the secret (256 random bits) is checked
against the row's sha256 hash in constant time. Random 256-bit secrets need no slow KDF, unlike
passwords people choose. A configured bootstrap token of another shape is found by a hash-derived id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime

PREFIX = "hwsr"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One stored token (never the token itself)."""

    id: str
    hash: str = field(repr=False)
    user: str
    created: datetime
    superuser: bool = False
    scopes: frozenset[str] | None = None
    description: str = ""
    expires: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str:
    """The row id a presented token names (a derived id for tokens not of our shape)."""
    parts = token.split("_", 2)
    if len(parts) == 3 and parts[0] == PREFIX and len(parts[1]) == 16 and parts[2]:
        return parts[1]
    return "x" + hashlib.sha256(("id:" + token).encode()).hexdigest()[:15]


def matches(record: TokenRecord, token: str) -> bool:
    return hmac.compare_digest(record.hash, hash_token(token))


def new_token() -> tuple[str, str]:
    """A fresh (token, id)."""
    token_id = secrets.token_hex(8)
    return f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}", token_id
