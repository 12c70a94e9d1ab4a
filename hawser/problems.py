"""RFC 9457 problem details: the one body every HTTP error of Hawser has.

`problem_response` builds the response; `status_for` looks an error up along its MRO in a table
that each HTTP-facing app passes in, so the table, not the raise site, decides the status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from starlette.responses import Response

from hawser.errors import HawserError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://hawser.dev/problems/"


class ProblemResponse(Response):
    media_type = PROBLEM_JSON

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        code: str = "",
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        body: dict[str, object] = {
            "type": _TYPE_BASE + code if code else "about:blank",
            "title": title,
            "status": status,
        }
        if detail:
            body["detail"] = detail
        if extra:
            body.update(extra)
        super().__init__(
            json.dumps(body, separators=(",", ":")).encode(), status_code=status,
            headers=dict(headers or {}),
        )


def status_for(error: HawserError, table: Mapping[type[HawserError], int]) -> int:
    """The status of the nearest class of `error` in `table`, 500 if none."""
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return 500


def problem_for(
    error: HawserError,
    table: Mapping[type[HawserError], int],
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    from http import HTTPStatus

    status = status_for(error, table)
    if status >= 500 and not error.retriable:
        log.error("unmapped error %r", error)
    return ProblemResponse(
        status, HTTPStatus(status).phrase, error.detail, code=error.code, headers=headers
    )


def internal_error() -> ProblemResponse:
    """For bugs: the caller logs the traceback; the client learns nothing of the internals."""
    return ProblemResponse(500, "Internal Server Error", "an unexpected error occurred",
                           code="internal")


def _api_table() -> dict[type[HawserError], int]:
    from hawser import errors as e

    return {
        e.AuthenticationError: 401,
        e.Forbidden: 403,
        e.NotFound: 404,
        e.Conflict: 409,
        e.BadJson: 400,
        e.BadRequest: 400,
        e.PayloadTooLarge: 413,
        e.BusUnavailable: 503,
    }


#: The status table of the management and integration APIs (port 8081).
API_STATUS: Mapping[type[HawserError], int] = _api_table()


def exception_handlers(
    table: Mapping[type[HawserError], int],
) -> dict[type[Exception] | int, object]:
    """Starlette exception handlers that turn every error into a problem body, in one place.

    `HawserError` → its status from `table` (401 gets `WWW-Authenticate`, 503 `Retry-After`);
    Starlette's own `HTTPException` (404 no route, 405) → a problem with that status;
    anything else is a bug: logged with its traceback, answered with a bare 500.
    """
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    from hawser.errors import AuthenticationError, BusUnavailable

    async def on_hawser_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HawserError)
        headers: dict[str, str] = {}
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = request.scope.get("hawser.auth_challenge", 'Bearer realm="hawser"')
        if isinstance(exc, BusUnavailable):
            headers["Retry-After"] = str(exc.retry_after)
        return problem_for(exc, table, headers)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        from http import HTTPStatus

        return ProblemResponse(exc.status_code, HTTPStatus(exc.status_code).phrase,
                               exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else "",
                               headers=exc.headers)

    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return internal_error()

    return {HawserError: on_hawser_error, HTTPException: on_http_exception, Exception: on_bug}
