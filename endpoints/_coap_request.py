"""The pure core of the CoAP endpoint: a request's options → what to publish, and errors → replies.

Nothing here does I/O or awaits. `read_request` takes the options once (path, query, credentials,
content format, block options) and refuses unknown critical options; `publish_parameters` turns
them into credentials and an `Uplink` with the shared parsers of `endpoints.uplink`; `COAP_CODE` is
this adapter's one table from Hawser's errors to CoAP response codes, and `error_reply` builds the
reply (Max-Age for retriable errors, Size1 for a body over the limit, a short text diagnostic).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.numbers.optionnumbers import OptionNumber

from endpoints._coap_blocks import IncompleteBody
from endpoints.uplink import DeviceCredentials, Uplink, parse_basic_auth, parse_uplink
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

#: Drogue's option carrying HTTP-style credentials (`Basic base64(device@app:password)`). Its number
#: is odd, so it is critical: a server that does not know it must refuse the request.
AUTH_OPTION = 4209
#: Drogue's option naming the command in a 2.05 reply (even: elective).
COMMAND_OPTION = 4210

_URI_PATH = int(OptionNumber.URI_PATH)
_URI_QUERY = int(OptionNumber.URI_QUERY)
_CONTENT_FORMAT = int(OptionNumber.CONTENT_FORMAT)
_BLOCK1 = int(OptionNumber.BLOCK1)
_BLOCK2 = int(OptionNumber.BLOCK2)
_SIZE1 = int(OptionNumber.SIZE1)
_PROXY = frozenset({int(OptionNumber.PROXY_URI), int(OptionNumber.PROXY_SCHEME)})
#: Critical options this endpoint understands without acting on them: the host and port it was
#: reached at (no virtual hosting) and Accept (replies are empty, or a command as it was given).
_HARMLESS_CRITICAL = frozenset({int(OptionNumber.URI_HOST), int(OptionNumber.URI_PORT), int(OptionNumber.ACCEPT)})
#: Query parameters the endpoint reads (as the HTTP endpoint); others are ignored.
_PARAMETERS = frozenset({"ct", "commandTimeout", "data_schema", "as", "application", "device"})
#: Longest diagnostic payload of an error reply, in bytes.
MAX_DIAGNOSTIC = 128


class UnknownCriticalOption(BadRequest):
    """The request carries a critical option this endpoint does not know (RFC 7252 section 5.4.1)."""

    # A NON request gets the same 4.02 (non-confirmable) rather than being dropped silently, which
    # RFC 7252 also allows: it costs no more and tells the device why nothing happened.

    code = "bad-option"


class MethodNotAllowed(HawserError):
    """Devices publish with POST."""

    code = "method-not-allowed"


class ProxyingNotSupported(HawserError):
    """This endpoint is not a CoAP proxy (Proxy-Uri, Proxy-Scheme)."""

    code = "proxying-not-supported"


class ShuttingDown(HawserError):
    """The endpoint is shutting down; try again (another instance)."""

    code = "shutting-down"
    retriable = True
    retry_after = 1


#: The one table of this adapter: error class (looked up along the MRO) → CoAP response code.
COAP_CODE: Mapping[type[HawserError], Any] = {
    AuthenticationError: Code.UNAUTHORIZED,  # 4.01 missing, malformed or wrong credentials
    Forbidden: Code.FORBIDDEN,  # 4.03 application or device disabled, gateway not allowed
    BadJson: Code.NOT_ACCEPTABLE,  # 4.06 as Drogue's HTTP endpoint answers bad JSON for a JSON format
    UnknownCriticalOption: Code.BAD_OPTION,  # 4.02
    IncompleteBody: Code.REQUEST_ENTITY_INCOMPLETE,  # 4.08 a block arrived without those before it
    BadRequest: Code.BAD_REQUEST,  # 4.00 bad names, bad query values, malformed blocks
    NotFound: Code.NOT_FOUND,  # 4.04 not /v1/<channel>, or the application's topic is gone
    MethodNotAllowed: Code.METHOD_NOT_ALLOWED,  # 4.05
    PayloadTooLarge: Code.REQUEST_ENTITY_TOO_LARGE,  # 4.13 with Size1 = the limit
    BusUnavailable: Code.SERVICE_UNAVAILABLE,  # 5.03 with Max-Age = retry_after
    Overloaded: Code.SERVICE_UNAVAILABLE,  # 5.03 too many password checks waiting
    ShuttingDown: Code.SERVICE_UNAVAILABLE,  # 5.03 draining
    ProxyingNotSupported: Code.PROXYING_NOT_SUPPORTED,  # 5.05
}


def _registered_media_types() -> dict[int, str]:
    """Content format number → media type, for the formats of IANA's registry (as aiocoap ships
    it) without a content coding: a CloudEvent's `datacontenttype` cannot say "deflated"."""
    table: dict[int, str] = {}
    for number, entry in list(ContentFormat._value2member_map_.items()):
        if entry.is_known() and entry.encoding == "identity":
            table[int(number)] = entry.media_type
    return table


#: Built once at import: aiocoap's enum grows by every unknown number it is asked about.
MEDIA_TYPES: Mapping[int, str] = _registered_media_types()
_FORMAT_NUMBERS: Mapping[str, int] = {
    media.replace(" ", "").lower(): number for number, media in MEDIA_TYPES.items()
}


def media_type(content_format: int | None) -> str | None:
    """The media type of a registered content format; None for no format, an unregistered number
    (experimental and private ranges) or a format with a content coding. The event then has no
    `datacontenttype`, as an HTTP publish without Content-Type."""
    return None if content_format is None else MEDIA_TYPES.get(content_format)


def content_format(media: str | None) -> int | None:
    """The registered content format of a media type (a command's content type), else None."""
    return None if media is None else _FORMAT_NUMBERS.get(media.replace(" ", "").lower())


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """A POST to /v1/<channel>[/<as-device>], its options read once."""

    channel: str
    as_device: str | None
    #: The raw value of option 4209, if any.
    authorization: bytes | None
    query: Mapping[str, str]
    content_format: int | None = None
    #: aiocoap's BlockwiseTuple (block_number, more, size_exponent) of Block1 / Block2, if any.
    block1: Any = None
    block2: Any = None
    #: The body size the client announced (Size1), if it did.
    size1: int | None = None


def match_path(path: Iterable[str]) -> tuple[str, str | None] | None:
    """`(channel, as_device)` for the Uri-Path segments `v1, <channel>[, <as-device>...]`, else
    None. Segments after the channel are joined with `/` into the device name, as Drogue joins
    them; an empty one (a trailing slash) names no device."""
    segments = list(path)
    if len(segments) < 2 or segments[0] != "v1" or not segments[1]:
        return None
    return segments[1], "/".join(segments[2:]) or None


def _unquote(text: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("query parameter is not percent-encoded UTF-8") from None


def read_query(values: Iterable[str]) -> dict[str, str]:
    """The parameters of the Uri-Query options, each option one `name=value` or several packed as
    `a=1&b=2` (Drogue's clients send one such option). Names and values are percent-decoded; `+`
    stays `+` (no value Hawser reads may hold a space). The last occurrence of a name wins."""
    query: dict[str, str] = {}
    for value in values:
        for part in value.split("&") if "&" in value else (value,):
            name, _, raw = part.partition("=")
            if "%" in name:
                name = _unquote(name)
            if name in _PARAMETERS:
                query[name] = _unquote(raw) if "%" in raw else raw
    return query


def read_request(code: Any, options: Any) -> PublishRequest:
    """Read an incoming request's options (an aiocoap `Options`) in one pass. Raises
    UnknownCriticalOption, ProxyingNotSupported, NotFound or MethodNotAllowed, in that order."""
    path: list[str] = []
    queries: list[str] = []
    authorization = cf = block1 = block2 = size1 = None
    for option in options.option_list():
        number = int(option.number)
        if number == _URI_PATH:
            path.append(option.value)
        elif number == _URI_QUERY:
            queries.append(option.value)
        elif number == AUTH_OPTION:
            if authorization is None:
                authorization = option.value
        elif number == _CONTENT_FORMAT:
            cf = int(option.value) if cf is None else cf
        elif number == _BLOCK1:
            block1 = _only(block1, option)
        elif number == _BLOCK2:
            block2 = _only(block2, option)
        elif number == _SIZE1:
            size1 = option.value if size1 is None else size1  # elective: a second one is ignored
        elif number & 1 and number not in _HARMLESS_CRITICAL:
            if number in _PROXY:
                raise ProxyingNotSupported()
            raise UnknownCriticalOption(f"critical option {number} is not supported")
    match = match_path(path)
    if match is None:
        raise NotFound("publish to /v1/<channel>[/<device>]")
    if code != Code.POST:
        raise MethodNotAllowed("publish with POST")
    channel, as_device = match
    return PublishRequest(channel, as_device, authorization, read_query(queries), cf, block1, block2, size1)


def _only(held: Any, option: Any) -> Any:
    """The value of a critical option that is not repeatable (Block1, Block2): a second occurrence
    is an unrecognized option (RFC 7252 section 5.4.5). aiocoap reads the first and this module
    would read the last, so letting both through would answer one block as if it were another."""
    if held is not None:
        raise UnknownCriticalOption(f"option {int(option.number)} is not repeatable")
    return option.value


def publish_parameters(request: PublishRequest, *, verified: bool) -> tuple[DeviceCredentials | None, Uplink]:
    """The credentials of option 4209 (None when the transport `verified` the device already: DTLS
    with a pre-shared key, whose identity wins over the option) and the uplink. Raises
    MissingCredentials, BadCredentials or BadRequest."""
    query = request.query
    credentials = None
    if not verified:
        # The option holds what an HTTP Authorization header would; its bytes are read as HTTP
        # reads a header (latin-1), so that only the base64 check decides what is valid.
        text = None if request.authorization is None else request.authorization.decode("latin-1")
        credentials = parse_basic_auth(text, default_application=query.get("application"), device=query.get("device"))
    uplink = parse_uplink(request.channel, request.as_device, query, media_type(request.content_format))
    return credentials, uplink


def coap_code(error: HawserError) -> Any:
    """The table's code for `error`, by the first class of its MRO found; 5.00 otherwise."""
    for cls in type(error).__mro__:
        code = COAP_CODE.get(cls)
        if code is not None:
            return code
    return Code.INTERNAL_SERVER_ERROR


def diagnostic(text: str) -> bytes:
    """A diagnostic payload (RFC 7252 section 5.5.2): UTF-8 text, at most MAX_DIAGNOSTIC bytes."""
    data = text.encode("utf-8")
    if len(data) <= MAX_DIAGNOSTIC:
        return data
    return data[:MAX_DIAGNOSTIC].decode("utf-8", errors="ignore").encode("utf-8")


def error_reply(error: HawserError) -> Any:
    """The reply refusing a request for `error`."""
    reply = Message(code=coap_code(error), payload=diagnostic(error.detail))
    if error.retry_after is not None:
        reply.opt.max_age = error.retry_after
    if isinstance(error, PayloadTooLarge):
        reply.opt.size1 = error.limit
    return reply


def internal_error_reply() -> Any:
    """The reply to a request that hit a bug: 5.00 and nothing about it."""
    return Message(code=Code.INTERNAL_SERVER_ERROR, payload=b"internal error")


__all__ = [
    "AUTH_OPTION",
    "COAP_CODE",
    "COMMAND_OPTION",
    "MAX_DIAGNOSTIC",
    "MEDIA_TYPES",
    "MethodNotAllowed",
    "ProxyingNotSupported",
    "PublishRequest",
    "ShuttingDown",
    "UnknownCriticalOption",
    "coap_code",
    "content_format",
    "diagnostic",
    "error_reply",
    "internal_error_reply",
    "match_path",
    "media_type",
    "publish_parameters",
    "read_query",
    "read_request",
]
