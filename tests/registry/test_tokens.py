"""Access tokens: the authenticator and the bootstrap token, over a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auth.tokens import AccessTokenAuthenticator, ensure_bootstrap_token
from hawser.errors import BadCredentials
from registry.store import RegistryStore
from registry.tokens import TokenRecord, hash_token, new_token, token_id_of


def test_token_format() -> None:
    token, token_id = new_token()
    assert token.startswith(f"hwsr_{token_id}_")
    assert len(token) > 60
    assert token_id_of(token) == token_id
    assert token_id_of("something-else") == token_id_of("something-else") != token_id_of("other")
    assert hash_token(token) != token
    assert len(hash_token(token)) == 64


async def test_bootstrap_once(store: RegistryStore) -> None:
    token = await ensure_bootstrap_token(store)
    assert token is not None
    assert await ensure_bootstrap_token(store) is None
    principal = await AccessTokenAuthenticator(store).authenticate_bearer(token)
    assert principal.user == "admin"
    assert principal.superuser
    assert principal.scopes is None
    stored = await store.list_tokens()
    assert [r.superuser for r in stored] == [True]
    assert token not in repr(stored)
    assert stored[0].hash == hash_token(token)


async def test_configured_bootstrap(store: RegistryStore) -> None:
    assert await ensure_bootstrap_token(store, "my-own-admin-token") == "my-own-admin-token"
    authenticator = AccessTokenAuthenticator(store)
    assert (await authenticator.authenticate_bearer("my-own-admin-token")).superuser
    with pytest.raises(BadCredentials):
        await authenticator.authenticate_bearer("my-own-admin-tokeN")


async def test_wrong_unknown_and_expired(store: RegistryStore) -> None:
    authenticator = AccessTokenAuthenticator(store)
    now = datetime.now(UTC)
    token, token_id = new_token()
    await store.add_token(TokenRecord(token_id, hash_token(token), "alice", now, scopes=frozenset({"a"})))
    principal = await authenticator.authenticate_bearer(token)
    assert principal.user == "alice"
    assert not principal.superuser
    assert principal.scopes == frozenset({"a"})
    assert principal.token_id == token_id
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), f"hwsr_{token_id}_x", "", "hwsr_x", "x" * 600):
        with pytest.raises(BadCredentials):
            await authenticator.authenticate_bearer(bad)
    old, old_id = new_token()
    await store.add_token(TokenRecord(old_id, hash_token(old), "alice", now - timedelta(hours=2),
                                      expires=now - timedelta(seconds=1)))
    with pytest.raises(BadCredentials):
        await authenticator.authenticate_bearer(old)
    await store.delete_token(token_id, user="alice")
    with pytest.raises(BadCredentials):
        await authenticator.authenticate_bearer(token)
