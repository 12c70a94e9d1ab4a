"""RFC 9457 problem details: the one body every HTTP error of Hawser has, built in one place.

`problem_for` looks an error up along its MRO in a table that each HTTP-facing app passes in (so the
table, not the raise site, decides the status) and adds the headers the error calls for:
`WWW-Authenticate` on an authentication failure, `Retry-After` when the error knows when to retry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from hawser import errors as e

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://hawser.dev/problems/"

#: The challenge of the APIs (bearer tokens); the device endpoint passes its Basic one.
BEARER_CHALLENGE = 'Bearer realm="hawser"'


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
            json.dumps(body, separators=(",", ":")).encode(), status_code=status, headers=dict(headers or {})
        )


def status_for(error: e.HawserError, table: Mapping[type[e.HawserError], int]) -> int:
    """The status of the nearest class of `error` in `table`, 500 if none."""
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return 500


def problem_for(
    error: e.HawserError,
    table: Mapping[type[e.HawserError], int],
    *,
    challenge: str = BEARER_CHALLENGE,
    extra: Mapping[str, object] | None = None,
) -> ProblemResponse:
    status = status_for(error, table)
    if status >= 500 and not error.retriable:
        log.error("no status for %r in this adapter's table", error)
    headers: dict[str, str] = {}
    if isinstance(error, e.AuthenticationError):
        headers["WWW-Authenticate"] = challenge
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return ProblemResponse(
        status, HTTPStatus(status).phrase, error.detail, code=error.code, headers=headers, extra=extra
    )


def internal_error() -> ProblemResponse:
    """For bugs: the caller logs the traceback; the client learns nothing of the internals."""
    return ProblemResponse(500, "Internal Server Error", "an unexpected error occurred", code="internal")


#: The status table of the management and integration APIs (port 8081).
API_STATUS: Mapping[type[e.HawserError], int] = {
    e.AuthenticationError: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.BadRequest: 400,
    e.PayloadTooLarge: 413,
    e.BusUnavailable: 503,
    e.Overloaded: 503,
}


def exception_handlers(
    table: Mapping[type[e.HawserError], int], *, challenge: str = BEARER_CHALLENGE
) -> dict[type[Exception] | int, object]:
    """Starlette exception handlers that turn every error into a problem body.

    `HawserError` → its status from `table`; Starlette's own `HTTPException` (no route, wrong method)
    → a problem with that status; anything else is a bug, answered with a bare 500. The bug's
    traceback is logged once, by uvicorn, because Starlette re-raises it after this reply is sent.
    """

    async def on_hawser_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, e.HawserError)
        return problem_for(exc, table, challenge=challenge)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        phrase = HTTPStatus(exc.status_code).phrase
        return ProblemResponse(
            exc.status_code, phrase, exc.detail if exc.detail != phrase else "", headers=exc.headers
        )

    async def on_bug(request: Request, exc: Exception) -> Response:
        return internal_error()

    return {e.HawserError: on_hawser_error, HTTPException: on_http_exception, Exception: on_bug}
