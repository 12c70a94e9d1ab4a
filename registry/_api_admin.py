"""`/api/admin/v1alpha1/apps/{app}/members` (Drogue's members document) and
`/api/tokens/v1alpha1` (the caller's access tokens; the secret is shown once, at creation).

A scoped token manages (lists, revokes) only tokens whose scopes lie within its own, and creates
only such tokens; a member list must keep at least one admin unless a superuser sets it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hawser.access import Principal, Role, UserAuthenticator
from hawser.errors import Conflict, Forbidden, NotFound
from registry._http import app_param, guarded, json_body, json_response, parse, principal_of, require
from registry.documents import CreatedToken, MemberEntry, Members, TokenInfo, TokenRequest
from registry.names import is_identifier
from registry.store import RegistryStore
from registry.tokens import TokenRecord, hash_token, new_token

ADMIN_BASE = "/api/admin/v1alpha1"
TOKENS_BASE = "/api/tokens/v1alpha1"


def token_info(record: TokenRecord) -> TokenInfo:
    return TokenInfo(
        id=record.id, user=record.user, superuser=record.superuser,
        scopes=sorted(record.scopes) if record.scopes is not None else None,
        description=record.description, created=record.created, expires=record.expires,
    )


def _scopes_for(principal: Principal, wanted: list[str] | None) -> frozenset[str] | None:
    """A token never reaches further than the one that created it."""
    if wanted is None:
        return principal.scopes
    scopes = frozenset(wanted)
    if principal.scopes is not None and not scopes <= principal.scopes:
        raise Forbidden("a scoped token can only create tokens within its own scopes")
    return scopes


def _manages(principal: Principal, record: TokenRecord) -> bool:
    """Whether `principal` may see and revoke `record`: its own tokens (any user's for an unscoped
    superuser); a scoped token only those whose scopes lie within its own (never an unscoped one),
    so a token limited to one application cannot revoke its owner's wider tokens."""
    if principal.superuser and principal.scopes is None:
        return True
    if record.user != principal.user:
        return False
    return principal.scopes is None or (record.scopes is not None and record.scopes <= principal.scopes)


class AdminEndpoints:
    def __init__(self, store: RegistryStore, authenticator: UserAuthenticator) -> None:
        self.store = store
        self.auth = authenticator

    async def get_members(self, request: Request) -> Response:
        app = app_param(request)
        await require(self.store, await principal_of(request, self.auth), app, Role.ADMIN)
        version, members = await self.store.get_members(app)
        document = Members(resource_version=version,
                           members={u: MemberEntry(role=r) for u, r in members.items()})
        return json_response(document.dump())

    async def put_members(self, request: Request) -> Response:
        app = app_param(request)
        principal = await principal_of(request, self.auth)
        await require(self.store, principal, app, Role.ADMIN)
        document = parse(Members, await json_body(request))
        if not principal.superuser and not any(e.role is Role.ADMIN for e in document.members.values()):
            raise Conflict("an application needs at least one admin; only a superuser may remove the last")
        await self.store.set_members(
            app, {u: e.role for u, e in document.members.items()},
            resource_version=document.resource_version,
        )
        return Response(status_code=204)

    async def list_tokens(self, request: Request) -> Response:
        principal = await principal_of(request, self.auth)
        records = await self.store.list_tokens(principal.user)
        return json_response([token_info(r).model_dump(mode="json") for r in records
                              if _manages(principal, r)])

    async def create_token(self, request: Request) -> Response:
        principal = await principal_of(request, self.auth)
        wanted = parse(TokenRequest, await json_body(request, optional=True) or {})
        user = wanted.user or principal.user
        if user != principal.user and not principal.superuser:
            raise Forbidden("only a superuser may create tokens for another user")
        token, token_id = new_token()
        now = datetime.now(UTC)
        record = TokenRecord(
            id=token_id, hash=hash_token(token), user=user, created=now,
            # A superuser's token for itself is a superuser token; a token for another user is not.
            superuser=principal.superuser and user == principal.user,
            scopes=_scopes_for(principal, wanted.scopes), description=wanted.description,
            expires=now + timedelta(seconds=wanted.expires_in) if wanted.expires_in else None,
        )
        await self.store.add_token(record)
        info = token_info(record)
        created = CreatedToken(**info.model_dump(), token=token)
        return json_response(created.model_dump(mode="json"), 201,
                             {"Location": f"{TOKENS_BASE}/{token_id}"})

    async def delete_token(self, request: Request) -> Response:
        principal = await principal_of(request, self.auth)
        token_id: str = request.path_params["id"]
        # 404, not 403, for a token the caller may not manage: its existence is not the caller's business.
        missing = NotFound(f"token {token_id[:40]!r} not found")
        if not is_identifier(token_id, 64):
            raise missing
        record = await self.store.get_token(token_id)
        if record is None or not _manages(principal, record):
            raise missing
        await self.store.delete_token(token_id, user=record.user)
        return Response(status_code=204)

    def routes(self) -> list[Route]:
        members = f"{ADMIN_BASE}/apps/{{app}}/members"
        return [
            Route(members, guarded(self.get_members), methods=["GET"]),
            Route(members, guarded(self.put_members), methods=["PUT"]),
            Route(TOKENS_BASE, guarded(self.list_tokens), methods=["GET"]),
            Route(TOKENS_BASE, guarded(self.create_token), methods=["POST"]),
            Route(f"{TOKENS_BASE}/{{id}}", guarded(self.delete_token), methods=["DELETE"]),
        ]
