"""The HTTP device endpoint (port 8080): `POST /v1/{channel}[/{as-device}]` as Drogue serves it.

A thin transport around the pure parsers of `endpoints.uplink`, the device authenticator and the
ingest pipeline. The publish route is served straight from the ASGI scope: on this, the hottest
path of Hawser, Starlette's routing, request and response objects and middleware layers cost
about as much CPU as the whole send to Kafka, so matching the path is a pure function here and
everything else (health, metrics, unknown paths) is a small Starlette app. Errors become replies in
one place, `HTTP_STATUS`; anything that is not a `HawserError` is a bug, logged with its traceback
and answered with a generic 500. The body is read with a hard cap and never buffered past it.

`/ttn/v3`, `/ttn/v2` (The Things Network's webhooks) go to `endpoints.ttn`, with this module's
error table; they are matched only after the publish route, which stays as it is.

Drogue treats the path suffix after the channel as part of the topic (`/v1/{channel}/{sub/topic}`);
Hawser, per its design and issue 4, reads it as the device a gateway publishes for (`as-device`, the
same as the `as` query parameter). Query `application` and `device` follow Drogue: with `device`,
the Basic user is the username of that device's `user` credential.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from auth.devices import DeviceAuthenticator
from endpoints.ingest import Ingest
from endpoints.ttn import TTN_PATHS, TtnWebhooks
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
from hawser.http_body import check_content_length, header_values, receive_body
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


def match_publish_path(path: str) -> tuple[str, str | None] | None:
    """`(channel, as_device)` for `/v1/{channel}` and `/v1/{channel}/{as-device...}`, else None.
    Pure: the same decision the HTTP app makes, testable without a server."""
    if not path.startswith("/v1/"):
        return None
    channel, slash, rest = path[4:].partition("/")
    if not channel:
        return None
    return channel, (rest or None) if slash else None


_ACCEPTED_START: Message = {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]}
_EMPTY_BODY: Message = {"type": "http.response.body", "body": b""}


class HttpEndpoint:
    """The ASGI app of the HTTP endpoint. `state.ready` (True) may be cleared by the composition
    root while draining, which turns `/health/ready` to 503."""

    def __init__(self, ingest: Ingest, authenticator: DeviceAuthenticator, settings: HttpEndpointSettings) -> None:
        self.ingest = ingest
        self.authenticator = authenticator
        self.limit = settings.max_payload_bytes
        self.state = State()
        self.state.ready = True
        self.ttn = TtnWebhooks(ingest, authenticator, self.limit, error_response)

        async def ready() -> bool:
            return bool(self.state.ready)

        self.others = Starlette(
            routes=operational_routes(ready), exception_handlers=exception_handlers(HTTP_STATUS)  # type: ignore[arg-type]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (match := match_publish_path(scope["path"])) is not None:
            if scope["method"] == "POST":
                response = await self.publish(scope, receive, *match)
            else:
                response = ProblemResponse(405, "Method Not Allowed", "publish with POST", headers={"Allow": "POST"})
            if response is None:
                await send(_ACCEPTED_START)
                await send(_EMPTY_BODY)
            else:
                await response(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] in TTN_PATHS:
            await self.ttn(scope, receive, send)
            return
        await self.others(scope, receive, send)

    async def publish(self, scope: Scope, receive: Receive, channel: str, as_device: str | None) -> Response | None:
        """None once the bus holds the event (202), else the error reply."""
        try:
            authorization, content_type, content_length = header_values(scope)
            raw_query = scope["query_string"]
            query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) if raw_query else {}
            credentials = parse_basic_auth(
                authorization, default_application=query.get("application"), device=query.get("device")
            )
            uplink = parse_uplink(channel, as_device, query, content_type)
            check_content_length(content_length, self.limit)
            outcome = await self.authenticator.authenticate(credentials, uplink.as_device)
            payload = await receive_body(receive, self.limit)
            if payload is None:
                return None  # the device went away before sending its body: nothing to publish or answer
            await self.ingest.publish(outcome, uplink, payload)
        except HawserError as error:
            return error_response(error)
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            return internal_error()
        # No command router yet: `ct` is validated above and the reply is immediate.
        return None


def build_app(ingest: Ingest, authenticator: DeviceAuthenticator, settings: HttpEndpointSettings) -> HttpEndpoint:
    return HttpEndpoint(ingest, authenticator, settings)
