"""Who a user is (`Principal`) and what roles mean, shared by every API.

The registry API sits above `auth` in the import order, so it receives a `UserAuthenticator`
from the composition root instead of importing one; `auth` provides the implementations (Hawser
access tokens now, OIDC later). Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Role(enum.IntEnum):
    """Roles of an application's members; a higher role includes every lower one."""

    READER = 1
    MANAGER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r} (admin, manager or reader)") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user. `superuser` is the bootstrap admin: every role on every app."""

    user: str
    superuser: bool = False
    #: Applications this credential is restricted to (a scoped token); None means no restriction.
    scopes: frozenset[str] | None = None
    #: Id of the access token used, if any (for audit logs; never the token itself).
    token_id: str | None = None

    def may_touch(self, application: str) -> bool:
        """Whether the credential's scope (not the user's membership) covers the application."""
        return self.scopes is None or application in self.scopes


class UserAuthenticator(Protocol):
    """Turns a bearer credential into a `Principal`; raises `AuthenticationError` if invalid."""

    async def authenticate_bearer(self, token: str) -> Principal: ...
