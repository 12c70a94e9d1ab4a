"""The HTTP device endpoint (port 8080): `POST /v1/{channel}[/{as-device}]` as Drogue serves it.

A thin transport around the pure parsers of `endpoints.uplink`, the device authenticator and the
ingest pipeline. Errors become replies in one place, `HTTP_STATUS`; anything that is not a
`HawserError` is a bug, logged with its traceback and answered with a generic 500. The body is read
with a hard cap and never buffered past the limit; uvicorn discards what a device still sends after
the 413 instead of resetting the connection (a reset can destroy the 413 before the device reads it).

Drogue treats the path suffix after the channel as part of the topic (`/v1/{channel}/{sub/topic}`);
Hawser, per its design and issue 4, reads it as the device a gateway publishes for (`as-device`, the
same as the `as` query parameter). Query `application` and `device` follow Drogue: with `device`,
the Basic user is the username of that device's `user` credential.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auth.devices import DeviceAuthenticator
from endpoints.ingest import Ingest
from endpoints.uplink import parse_basic_auth, parse_uplink
from hawser.config import HttpEndpointSettings
from hawser.errors import (
    AuthenticationError,
    BadJson,
    BadRequest,
    BusUnavailable,
    Forbidden,
    HawserError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
)
from hawser.http_body import check_content_length, read_body
from hawser.problems import ProblemResponse, exception_handlers, internal_error, problem_for
from hawser.telemetry import operational_routes

log = logging.getLogger(__name__)

#: The one table of this adapter: error class (looked up along the MRO) → HTTP status.
HTTP_STATUS: Mapping[type[HawserError], int] = {
    AuthenticationError: 401,
    Forbidden: 403,
    BadJson: 406,  # Drogue answers 406 Not Acceptable for invalid JSON under a JSON content type
    BadRequest: 400,
    NotFound: 404,
    PayloadTooLarge: 413,
    BusUnavailable: 503,
    Overloaded: 503,  # too many password verifications waiting; Retry-After from the error
}

BASIC_CHALLENGE = 'Basic realm="hawser"'


def error_response(error: HawserError) -> ProblemResponse:
    """The reply to a device for `error`: problem body, status from `HTTP_STATUS`, and the headers
    that status calls for."""
    return problem_for(error, HTTP_STATUS, challenge=BASIC_CHALLENGE)


def build_app(ingest: Ingest, authenticator: DeviceAuthenticator, settings: HttpEndpointSettings) -> Starlette:
    """The Starlette app of the HTTP endpoint. `app.state.ready` (True) may be cleared by the
    composition root while draining, which turns `/health/ready` to 503."""
    limit = settings.max_payload_bytes

    async def publish(request: Request) -> Response:
        try:
            headers = request.headers
            query = request.query_params
            credentials = parse_basic_auth(
                headers.get("authorization"), default_application=query.get("application"), device=query.get("device")
            )
            uplink = parse_uplink(
                request.path_params["channel"],
                request.path_params.get("as_device"),
                query,
                headers.get("content-type"),
            )
            check_content_length(headers.get("content-length"), limit)
            outcome = await authenticator.authenticate(credentials, uplink.as_device)
            payload = await read_body(request, limit)
            await ingest.publish(outcome, uplink, payload)
        except HawserError as error:
            return error_response(error)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return internal_error()
        # No command router yet: `ct` is validated above and the reply is immediate.
        return Response(status_code=202)

    async def ready() -> bool:
        return bool(app.state.ready)

    app = Starlette(
        routes=[
            Route("/v1/{channel}", publish, methods=["POST"]),
            Route("/v1/{channel}/{as_device:path}", publish, methods=["POST"]),
            *operational_routes(ready),
        ],
        exception_handlers=exception_handlers(HTTP_STATUS),  # type: ignore[arg-type]
    )
    app.state.ready = True
    return app
