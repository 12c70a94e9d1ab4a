"""The plumbing every registry endpoint shares: who is calling, what the body says, may they, and
turning errors into problem bodies (so the routes answer correctly whatever app mounts them).

Authorization rule: a user without any role on an application (or whose token is not scoped to it)
is told 404, exactly as if it did not exist, so names of other tenants' applications do not leak;
a member whose role is too low gets 403.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from hawser.access import Principal, Role, UserAuthenticator
from hawser.errors import (
    AuthenticationError,
    BadJson,
    BadRequest,
    Forbidden,
    HawserError,
    MissingCredentials,
    NotFound,
)
from hawser.http_body import read_body
from hawser.problems import API_STATUS, internal_error, problem_for
from registry.names import is_application_name, is_device_name
from registry.selectors import Selector, parse_selector
from registry.store import RegistryStore

log = logging.getLogger("registry.api")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]
MAX_BODY = 1024 * 1024
#: The largest page `?limit=` may ask for; without `limit` a list is complete (as Drogue's).
MAX_LIMIT = 1000


class InvalidDocument(HawserError):
    """The document does not match its schema."""

    code = "invalid-document"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"the document does not match its schema ({len(errors)} errors)")
        self.errors = errors


#: The API's table plus the registry's own schema error.
STATUS: Mapping[type[HawserError], int] = {**API_STATUS, InvalidDocument: 422}


def guarded(handler: Handler) -> Handler:
    """Every Hawser error becomes an RFC 9457 problem (422 with an `errors` list for schema errors);
    anything else is a bug: its traceback is logged here, once, and the client gets a bare 500."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidDocument as e:
            return problem_for(e, STATUS, extra={"errors": e.errors})
        except HawserError as e:
            return problem_for(e, STATUS)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return internal_error()

    endpoint.__name__ = handler.__name__
    return endpoint


async def principal_of(request: Request, authenticator: UserAuthenticator) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise MissingCredentials("an 'Authorization: Bearer <token>' header is required")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("only 'Authorization: Bearer <token>' is accepted")
    return await authenticator.authenticate_bearer(token.strip())


async def json_body(request: Request, *, optional: bool = False) -> Any:
    """The parsed JSON body: PayloadTooLarge beyond `MAX_BODY`, BadJson if not JSON (or nested
    too deeply for the parser)."""
    body = await read_body(request, MAX_BODY)
    if not body.strip():
        if optional:
            return None
        raise BadJson("a JSON body is required")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadJson(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadJson("the body is nested too deeply") from None


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidDocument(
            [dict(err) for err in e.errors(include_url=False, include_input=False, include_context=False)]
        ) from None


def selector_of(request: Request) -> Selector:
    return parse_selector(request.query_params.get("labels"))


def app_not_found(application: str) -> NotFound:
    return NotFound(f"application {application[:80]!r} not found")


def app_param(request: Request) -> str:
    """The `{app}` of the path; a name no application can have is simply not found."""
    app: str = request.path_params["app"]
    if not is_application_name(app):
        raise app_not_found(app)
    return app


def device_param(request: Request) -> tuple[str, str]:
    """(`{app}`, `{device}`) of the path; names that cannot exist are not found."""
    app, device = app_param(request), request.path_params["device"]
    if not is_device_name(device):
        raise NotFound(f"device {device[:80]!r} not found in application {app!r}")
    return app, device


def _bounded(request: Request, name: str, default: int | None, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) > high:
        raise BadRequest(f"'{name}' must be a whole number from 0 to {high}")
    return int(raw)


def page_of(request: Request) -> slice:
    """Drogue's paging, applied after the label selector: skip `?offset=`, then at most `?limit=`
    (0 to `MAX_LIMIT`; no `limit` means the rest of the list). BadRequest if out of range."""
    offset = _bounded(request, "offset", 0, 2**31 - 1) or 0
    limit = _bounded(request, "limit", None, MAX_LIMIT)
    return slice(offset, None if limit is None else offset + limit)


async def require(store: RegistryStore, principal: Principal, application: str, role: Role) -> None:
    """Raise NotFound if the caller may not see the application, Forbidden if its role is too low."""
    if not principal.may_touch(application):
        raise app_not_found(application)
    if principal.superuser:
        return
    have = await store.member_role(application, principal.user)
    if have is None:
        raise app_not_found(application)
    if have < role:
        raise Forbidden(f"this needs the role {role} on application {application!r}")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    headers=headers, media_type="application/json")


def precondition(data: Any, request: Request) -> str | None:
    """The resourceVersion a DELETE is conditional on: `?resourceVersion=`, or the body's
    `preconditions.resourceVersion` (Drogue), `metadata.resourceVersion` or `resourceVersion`."""
    if version := request.query_params.get("resourceVersion"):
        return version
    if not isinstance(data, dict):
        return None
    for section in ("preconditions", "metadata"):
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get("resourceVersion"), str):
            return str(block["resourceVersion"])
    version = data.get("resourceVersion")
    return version if isinstance(version, str) else None
