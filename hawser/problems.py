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
