"""User authentication by Hawser access tokens (`hwsr_<id>_<secret>`), and the bootstrap admin token.

The row is found by the token's id and the whole token compared, in constant time, with the stored
sha256 hash; tokens are 256-bit random, so a fast hash is right (unlike passwords). Implements
`hawser.access.UserAuthenticator`; OIDC will be a second implementation beside it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hawser.access import Principal
from hawser.errors import BadCredentials
from registry.store import RegistryStore
from registry.tokens import TokenRecord, hash_token, matches, new_token, token_id_of

BOOTSTRAP_USER = "admin"


class AccessTokenAuthenticator:
    def __init__(self, store: RegistryStore) -> None:
        self._store = store

    async def authenticate_bearer(self, token: str) -> Principal:
        # Nothing that cannot be a token (too long, control characters) is sent to the database.
        if not token or len(token) > 512 or not token.isprintable():
            raise BadCredentials("unknown or expired access token")
        record = await self._store.get_token(token_id_of(token))
        if record is None or not matches(record, token) or record.expired(datetime.now(UTC)):
            raise BadCredentials("unknown or expired access token")
        return Principal(user=record.user, superuser=record.superuser, scopes=record.scopes, token_id=record.id)


async def ensure_bootstrap_token(store: RegistryStore, configured: str = "") -> str | None:
    """On first start (no superuser token yet) create one for user `admin` (the configured value or
    a random token) and return it in clear, once; afterwards return None."""
    if await store.has_superuser_token():
        return None
    token = configured
    if token:
        token_id = token_id_of(token)
    else:
        token, token_id = new_token()
    await store.add_token(
        TokenRecord(
            id=token_id,
            hash=hash_token(token),
            user=BOOTSTRAP_USER,
            created=datetime.now(UTC),
            superuser=True,
            description="bootstrap admin token",
        )
    )
    return token


__all__ = ["BOOTSTRAP_USER", "AccessTokenAuthenticator", "ensure_bootstrap_token"]
