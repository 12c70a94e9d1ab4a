"""Storage of access tokens (records only; the format and checks are in `registry.tokens`, the
authenticator in `auth.tokens`)."""

from __future__ import annotations

from sqlalchemy import delete, exists, select

from hawser.errors import NotFound
from registry._base import StoreBase
from registry._convert import aware
from registry.models import AccessToken
from registry.tokens import TokenRecord


def _record(row: AccessToken) -> TokenRecord:
    return TokenRecord(
        id=row.id, hash=row.hash, user=row.user, created=aware(row.created), superuser=row.superuser,
        scopes=frozenset(row.scopes) if row.scopes is not None else None,
        description=row.description, expires=aware(row.expires) if row.expires else None,
    )


class TokenOps(StoreBase):
    async def add_token(self, record: TokenRecord) -> None:
        async with self._write() as session:
            session.add(AccessToken(
                id=record.id, hash=record.hash, user=record.user, superuser=record.superuser,
                scopes=sorted(record.scopes) if record.scopes is not None else None,
                description=record.description, created=record.created, expires=record.expires,
            ))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        async with self._sessions() as session:
            row = await session.get(AccessToken, token_id)
            return _record(row) if row else None

    async def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        """Tokens of `user`, or of everyone when None, oldest first."""
        query = select(AccessToken).order_by(AccessToken.created, AccessToken.id)
        if user is not None:
            query = query.where(AccessToken.user == user)
        async with self._sessions() as session:
            return [_record(r) for r in (await session.scalars(query)).all()]

    async def delete_token(self, token_id: str, *, user: str | None = None) -> None:
        """Delete a token (only if it belongs to `user`, unless None). NotFound otherwise."""
        query = delete(AccessToken).where(AccessToken.id == token_id)
        if user is not None:
            query = query.where(AccessToken.user == user)
        async with self._write() as session:
            result = await session.execute(query)
            if getattr(result, "rowcount", 0) != 1:
                raise NotFound(f"token {token_id[:40]!r} not found")

    async def has_superuser_token(self) -> bool:
        async with self._sessions() as session:
            return bool(await session.scalar(select(exists().where(AccessToken.superuser.is_(True)))))
