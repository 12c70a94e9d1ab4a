"""The Things Network webhooks on the HTTP endpoint: `POST /ttn/v3`, `/ttn/v2` (and `/ttn/`, v2 as in Drogue).
The webhook logs in as a gateway device (HTTP Basic, as the HTTP endpoint reads it) and publishes for the
TTN end device, which must exist (name or alias) and list the gateway, else 403: Drogue never creates devices
from webhooks either. Uplinks follow the device's `spec.ttn.payload` on channel `<f_port>`; other v3 messages
go whole, as JSON, on a channel named after their kind. 202 once the bus holds it; errors by `error_response`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from auth.devices import DeviceAuthenticator
from endpoints._ttn_documents import FIELDS, FULL, JSON_TYPE, OCTET_STREAM, RAW, TtnMessage, parse_v2, parse_v3
from endpoints.ingest import Ingest
from endpoints.uplink import parse_basic_auth, parse_uplink
from hawser.errors import HawserError
from hawser.http_body import check_content_length, header_values, receive_body
from hawser.problems import ProblemResponse, internal_error

log = logging.getLogger(__name__)

#: The webhook paths and the reader of each document format.
TTN_PATHS: Mapping[str, Callable[[bytes], TtnMessage]] = {"/ttn/v3": parse_v3, "/ttn/v2": parse_v2, "/ttn/": parse_v2}

_ACCEPTED_START: Message = {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]}
_EMPTY_BODY: Message = {"type": "http.response.body", "body": b""}


def payload_mode(ttn_spec: Mapping[str, object]) -> str:
    """The device's `spec.ttn.payload`: `raw`, `fields`, or `full` (also when unset or unknown)."""
    mode = ttn_spec.get("payload")
    return RAW if mode == RAW else FIELDS if mode == FIELDS else FULL


def event_data(message: TtnMessage, mode: str) -> tuple[bytes, str]:
    """The event's data and content type. An uplink follows `mode`: `raw` the frame payload,
    `fields` the decoded payload (`null` when TTN decoded none, as Drogue), `full` the webhook body;
    any other message kind is always published whole."""
    if message.is_uplink and mode == RAW:
        return message.raw, OCTET_STREAM
    if message.is_uplink and mode == FIELDS:
        return (b"null" if message.decoded is None else message.decoded), JSON_TYPE
    return message.document, JSON_TYPE


def port_data_schema(lorawan_spec: Mapping[str, object], port: int | None) -> str | None:
    """`spec.lorawan.ports.<port>.data_schema` of the device, as Drogue maps ports to schemas."""
    ports = lorawan_spec.get("ports")
    entry = ports.get(str(port)) if isinstance(ports, Mapping) and port is not None else None
    schema = entry.get("data_schema") if isinstance(entry, Mapping) else None
    return schema if isinstance(schema, str) and schema else None


class TtnWebhooks:
    """The ASGI app serving `TTN_PATHS`; `error_response` is the HTTP endpoint's error table."""

    def __init__(
        self,
        ingest: Ingest,
        authenticator: DeviceAuthenticator,
        limit: int,
        error_response: Callable[[HawserError], Response],
    ) -> None:
        self.ingest = ingest
        self.authenticator = authenticator
        self.limit = limit
        self.error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            response = await self.publish(scope, receive, TTN_PATHS[scope["path"]])
        else:
            response = ProblemResponse(405, "Method Not Allowed", "TTN webhooks POST", headers={"Allow": "POST"})
        if response is None:
            await send(_ACCEPTED_START)
            await send(_EMPTY_BODY)
        else:
            await response(scope, receive, send)

    async def publish(self, scope: Scope, receive: Receive, parse: Callable[[bytes], TtnMessage]) -> Response | None:
        """None once the bus holds the event (202), else the error reply. Nothing is published
        unless the whole document was read and understood."""
        try:
            authorization, _, content_length = header_values(scope)  # TTN always sends JSON
            raw_query = scope["query_string"]
            query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) if raw_query else {}
            credentials = parse_basic_auth(
                authorization, default_application=query.get("application"), device=query.get("device")
            )
            check_content_length(content_length, self.limit)
            # The gateway first, as the HTTP endpoint does: a stranger's body is never read. The
            # second call below (with the end device) is then a cache hit.
            await self.authenticator.authenticate(credentials)
            body = await receive_body(receive, self.limit)
            if body is None:
                return None  # TTN went away before sending the body: nothing to publish or answer
            message = parse(body)
            # Validates the channel, the end device id and `data_schema` before any lookup; only
            # uplinks carry the query's data schema (the webhook URL is the same for every kind).
            schema_query = {"data_schema": query["data_schema"]} if "data_schema" in query else {}
            uplink = parse_uplink(message.channel, message.device_id, schema_query, None)
            outcome = await self.authenticator.authenticate(credentials, message.device_id)
            target = outcome.target
            data, content_type = event_data(message, payload_mode(target.ttn))
            data_schema = None
            if message.is_uplink:
                data_schema = uplink.data_schema or port_data_schema(target.lorawan, message.port)
            uplink = dataclasses.replace(uplink, content_type=content_type, data_schema=data_schema)
            await self.ingest.publish(outcome, uplink, data, message.extensions, time=message.time)
        except HawserError as error:
            return self.error_response(error)
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            return internal_error()
        return None


__all__ = ["TTN_PATHS", "TtnWebhooks", "event_data", "payload_mode", "port_data_schema"]
