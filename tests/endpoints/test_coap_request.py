"""The pure core of the CoAP endpoint, from tables: reading a request's options, query forms, content
formats, the error table and its replies, the datagram screen, and the bounded Block1 spool."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption, OpaqueOption

from endpoints._coap_blocks import BlockSpool, IncompleteBody
from endpoints._coap_datagram import screen
from endpoints._coap_request import (
    AUTH_OPTION,
    COAP_CODE,
    MAX_DIAGNOSTIC,
    MethodNotAllowed,
    ProxyingNotSupported,
    PublishRequest,
    ShuttingDown,
    UnknownCriticalOption,
    coap_code,
    content_format,
    error_reply,
    internal_error_reply,
    match_path,
    media_type,
    publish_parameters,
    read_query,
    read_request,
)
from hawser.errors import (
    ApplicationDisabled,
    BadCredentials,
    BadJson,
    BadRequest,
    BusUnavailable,
    DeviceDisabled,
    GatewayNotAllowed,
    HawserError,
    InvalidName,
    MissingCredentials,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    UnknownTopic,
)

BASIC = b"Basic " + base64.b64encode(b"dev@app:pw")


def request(path: tuple[str, ...] = ("v1", "t"), query: tuple[str, ...] = (), code: Any = Code.POST,
            auth: bytes | None = BASIC, **options: Any) -> Any:
    message = Message(code=code, uri_path=path, uri_query=query, **options)
    if auth is not None:
        message.opt.add_option(OpaqueOption(AUTH_OPTION, auth))
    return message


# --- paths and queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (["v1", "t"], ("t", None)),
        (["v1", "t", "dev"], ("t", "dev")),
        (["v1", "t", "a", "b"], ("t", "a/b")),
        (["v1", "t", "a/b"], ("t", "a/b")),
        (["v1", "t", ""], ("t", None)),
        (["v1", "t/x"], ("t/x", None)),
        (["v1", ""], None),
        (["v1"], None),
        (["v2", "t"], None),
        ([], None),
        (["", "v1", "t"], None),
    ],
)
def test_match_path(path: list[str], expected: tuple[str, str | None] | None) -> None:
    assert match_path(path) == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["ct=30", "as=x"], {"ct": "30", "as": "x"}),
        (["ct=30&as=x"], {"ct": "30", "as": "x"}),
        (["ct=30&as=device%232"], {"ct": "30", "as": "device#2"}),
        (["data_schema=urn%3Aa", "application=app&device=dev"],
         {"data_schema": "urn:a", "application": "app", "device": "dev"}),
        (["as=a+b"], {"as": "a+b"}),  # `+` is no space: a raw option keeps it
        (["as=100%"], {"as": "100%"}),  # not an escape: kept as given
        (["as=x", "as=y"], {"as": "y"}),
        (["ct"], {"ct": ""}),
        (["unknown=1&&=2&commandTimeout=5"], {"commandTimeout": "5"}),
        (["%61s=x"], {"as": "x"}),
        ([], {}),
    ],
)
def test_read_query(options: list[str], expected: dict[str, str]) -> None:
    assert read_query(options) == expected


def test_read_query_refuses_escapes_that_are_not_utf8() -> None:
    with pytest.raises(BadRequest):
        read_query(["as=%ff"])


# --- reading a request ----------------------------------------------------------------------------


def test_read_request_takes_every_option_once() -> None:
    message = request(("v1", "t", "gw-child"), ("ct=5&data_schema=s",), content_format=50, size1=10,
                      block1=(2, True, 6), block2=(0, False, 5))
    parsed = read_request(message.code, message.opt)
    assert parsed == PublishRequest(
        "t", "gw-child", BASIC, {"ct": "5", "data_schema": "s"}, 50,
        BlockOption.BlockwiseTuple(2, True, 6), BlockOption.BlockwiseTuple(0, False, 5), 10,
    )


def test_read_request_takes_the_first_credentials() -> None:
    message = request()
    message.opt.add_option(OpaqueOption(AUTH_OPTION, b"second"))
    assert read_request(message.code, message.opt).authorization == BASIC


@pytest.mark.parametrize("number", [27, 23], ids=["block1", "block2"])
def test_a_repeated_block_option_is_an_unknown_critical_option(number: int) -> None:
    """RFC 7252 section 5.4.5; aiocoap reads the first one, so reading either would disagree."""
    message = request()
    message.opt.add_option(BlockOption(number, BlockOption.BlockwiseTuple(0, True, 6)))
    message.opt.add_option(BlockOption(number, BlockOption.BlockwiseTuple(3, False, 6)))
    with pytest.raises(UnknownCriticalOption, match="not repeatable"):
        read_request(message.code, message.opt)


def test_a_repeated_size1_is_ignored_as_an_elective_option() -> None:
    message = request(size1=10)
    message.opt.add_option(type(message.opt.get_option(60)[0])(60, 99999))
    assert read_request(message.code, message.opt).size1 == 10


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ([OpaqueOption(9999, b"")], UnknownCriticalOption),  # odd: critical
        ([OpaqueOption(1, b"etag")], UnknownCriticalOption),  # If-Match: preconditions are not evaluated
        ([OpaqueOption(9, b"")], UnknownCriticalOption),  # OSCORE
        ([OpaqueOption(35, b"coap://x")], ProxyingNotSupported),  # Proxy-Uri
    ],
)
def test_unknown_critical_options_are_refused(options: list[Any], error: type[HawserError]) -> None:
    message = request()
    for option in options:
        message.opt.add_option(option)
    with pytest.raises(error):
        read_request(message.code, message.opt)


def test_known_and_elective_options_are_accepted() -> None:
    message = request(uri_host="example", uri_port=5683, accept=50, observe=0, no_response=0)
    message.opt.add_option(OpaqueOption(9998, b"elective"))
    message.opt.add_option(OpaqueOption(4210, b"elective too"))
    assert read_request(message.code, message.opt).channel == "t"


def test_unknown_path_is_refused_before_the_method() -> None:
    message = request(("v2",), code=Code.GET)
    with pytest.raises(NotFound):
        read_request(message.code, message.opt)
    message = request(code=Code.GET)
    with pytest.raises(MethodNotAllowed):
        read_request(message.code, message.opt)


def parameters(query: dict[str, str], *, auth: bytes | None = BASIC, cf: int | None = None,
               as_device: str | None = None, verified: bool = False) -> Any:
    return publish_parameters(PublishRequest("t", as_device, auth, query, cf), verified=verified)


def test_publish_parameters() -> None:
    credentials, uplink = parameters({"ct": "30", "data_schema": "urn:x", "as": "child"}, cf=50)
    assert credentials is not None
    assert (credentials.application, credentials.user, credentials.password) == ("app", "dev", "pw")
    assert (uplink.channel, uplink.as_device, uplink.content_type, uplink.data_schema, uplink.command_timeout) == (
        "t", "child", "application/json", "urn:x", 30)


def test_publish_parameters_of_a_verified_device_ignore_option_4209() -> None:
    credentials, uplink = parameters({}, auth=b"garbage", verified=True, as_device="x")
    assert credentials is None
    assert uplink.as_device == "x"


@pytest.mark.parametrize(
    ("auth", "query", "as_device", "error"),
    [
        (None, {}, None, MissingCredentials),
        (b"", {}, None, MissingCredentials),
        (b"Bearer x", {}, None, BadCredentials),
        (b"Basic \xff", {}, None, BadCredentials),
        (b"Basic " + base64.b64encode(b"nodomain:pw"), {}, None, BadCredentials),
        (BASIC, {"ct": "x"}, None, BadRequest),
        (BASIC, {"as": "a"}, "b", BadRequest),
        (BASIC, {"as": "a b"}, None, InvalidName),
    ],
)
def test_publish_parameters_refuse(
    auth: bytes | None, query: dict[str, str], as_device: str | None, error: type[HawserError]
) -> None:
    with pytest.raises(error):
        parameters(query, auth=auth, as_device=as_device)


def test_user_without_application_takes_the_query_parameter() -> None:
    auth = b"Basic " + base64.b64encode(b"user1:pw")
    credentials, _ = parameters({"application": "app", "device": "dev"}, auth=auth)
    assert credentials is not None
    assert (credentials.application, credentials.user, credentials.device) == ("app", "user1", "dev")


# --- content formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "media"),
    [
        (0, "text/plain; charset=utf-8"),
        (40, "application/link-format"),
        (42, "application/octet-stream"),
        (50, "application/json"),
        (60, "application/cbor"),
        (110, "application/senml+json"),
        (112, "application/senml+cbor"),
        (11542, "application/vnd.oma.lwm2m+tlv"),
        (11050, None),  # application/json, deflate-coded
        (1, None),  # unassigned
        (65000, None),  # experimental
        (None, None),
    ],
)
def test_media_type_of_content_formats(number: int | None, media: str | None) -> None:
    assert media_type(number) == media


@pytest.mark.parametrize(
    ("media", "number"),
    [
        ("application/json", 50),
        ("Application/JSON", 50),
        ("text/plain;charset=utf-8", 0),
        ("text/plain; charset=utf-8", 0),
        ("application/x-unknown", None),
        (None, None),
    ],
)
def test_content_format_of_media_types(media: str | None, number: int | None) -> None:
    assert content_format(media) == number


# --- the error table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MissingCredentials(), Code.UNAUTHORIZED),
        (BadCredentials(), Code.UNAUTHORIZED),
        (ApplicationDisabled(), Code.FORBIDDEN),
        (DeviceDisabled(), Code.FORBIDDEN),
        (GatewayNotAllowed(), Code.FORBIDDEN),
        (BadRequest(), Code.BAD_REQUEST),
        (InvalidName(), Code.BAD_REQUEST),
        (BadJson(), Code.NOT_ACCEPTABLE),
        (UnknownCriticalOption(), Code.BAD_OPTION),
        (IncompleteBody(), Code.REQUEST_ENTITY_INCOMPLETE),
        (NotFound(), Code.NOT_FOUND),
        (UnknownTopic(), Code.NOT_FOUND),
        (MethodNotAllowed(), Code.METHOD_NOT_ALLOWED),
        (PayloadTooLarge(10, 5), Code.REQUEST_ENTITY_TOO_LARGE),
        (BusUnavailable(), Code.SERVICE_UNAVAILABLE),
        (Overloaded(), Code.SERVICE_UNAVAILABLE),
        (ShuttingDown(), Code.SERVICE_UNAVAILABLE),
        (ProxyingNotSupported(), Code.PROXYING_NOT_SUPPORTED),
        (HawserError(), Code.INTERNAL_SERVER_ERROR),  # not in the table: a bug
    ],
)
def test_coap_code(error: HawserError, code: Any) -> None:
    assert coap_code(error) == code


def test_every_table_entry_is_an_error_response() -> None:
    assert all(code.is_response() and not code.is_successful() for code in COAP_CODE.values())


def test_error_reply_carries_max_age_size1_and_a_short_diagnostic() -> None:
    reply = error_reply(BusUnavailable("down", retry_after=7))
    assert (reply.code, reply.opt.max_age, reply.opt.size1, reply.payload) == (
        Code.SERVICE_UNAVAILABLE, 7, None, b"down")
    reply = error_reply(Overloaded())
    assert reply.opt.max_age == 1
    reply = error_reply(PayloadTooLarge(5000, 4096))
    assert (reply.code, reply.opt.size1, reply.opt.max_age) == (Code.REQUEST_ENTITY_TOO_LARGE, 4096, None)
    reply = error_reply(BadRequest("é" * 200))
    assert len(reply.payload) <= MAX_DIAGNOSTIC
    reply.payload.decode("utf-8")  # cut on a character boundary
    reply = error_reply(BadCredentials())
    assert (reply.code, reply.opt.max_age, reply.payload) == (
        Code.UNAUTHORIZED, None, b"The credentials are malformed, unknown or wrong.")
    assert internal_error_reply().payload == b"internal error"


# --- the datagram screen --------------------------------------------------------------------------


def encoded(**options: Any) -> bytes:
    message = request(**options)
    message.mtype, message.mid, message.token = 0, 1, b"tk"
    message.payload = b"body"
    return bytes(message.encode())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encoded(), None),
        (encoded(content_format=50, block1=(3, True, 6), size1=70000), None),
        (bytes([0x40, 0x00, 0, 1]), None),  # CON ping
        (bytes([0x60, 0x00, 0, 1]), None),  # empty ACK
        (bytes([0x50, 0x00, 0, 1]), "empty"),  # empty NON
        (bytes([0x41, 0x00, 0, 1, 0x55]), "empty"),  # empty with a token
        (bytes([0x40, 0x02, 0]), "short"),
        (bytes([0x80, 0x02, 0, 1]), "version"),
        (bytes([0x49, 0x02, 0, 1]) + b"t" * 9, "token"),
        (bytes([0x48, 0x02, 0, 1]) + b"t" * 3, "truncated"),
        (bytes([0x60, 0x02, 0, 1]), "type"),  # a request as ACK
        (bytes([0x70, 0x45, 0, 1]), "code"),  # a response as RST
        (bytes([0x40, 0x20, 0, 1]), "code"),  # class 1 is reserved
        (bytes([0x40, 0xE1, 0, 1]), "code"),  # signalling codes are for reliable transports
        (bytes([0x40, 0x02, 0, 1, 0xFF]), "empty-payload"),
        (bytes([0x40, 0x02, 0, 1, 0xF0]), "reserved-nibble"),
        (bytes([0x40, 0x02, 0, 1, 0x0F]), "reserved-nibble"),
        (bytes([0x40, 0x02, 0, 1, 0xD0]), "truncated"),
        (bytes([0x40, 0x02, 0, 1, 0xE0, 0x01]), "truncated"),
        (bytes([0x40, 0x02, 0, 1, 0x0D]), "truncated"),
        (bytes([0x40, 0x02, 0, 1, 0x0E, 0x00]), "truncated"),
        (bytes([0x40, 0x02, 0, 1, 0x05, 0x61]), "truncated"),
        (bytes([0x40, 0x02, 0, 1, 0xB2, 0xFF, 0xFE]), "not-utf8"),  # Uri-Path
        (bytes([0x40, 0x02, 0, 1, 0xD2, 0x02, 0xC3, 0x28]), "not-utf8"),  # Uri-Query
        (bytes([0x40, 0x02, 0, 1, 0xC3, 1, 2, 3]), "content-format"),
        (bytes([0x40, 0x02, 0, 1, 0xE0, 0xFF, 0xFF, 0xE0, 0xFF, 0xFF]), "option-number"),
        (bytes([0x40, 0x02, 0, 1, 0xE0, 0xFE, 0xF2]), None),  # 65535: the largest option number
        (bytes([0x40, 0x02, 0, 1, 0xE0, 0xFE, 0xF3]), "option-number"),
    ],
)
def test_screen(data: bytes, reason: str | None) -> None:
    assert screen(data) == reason


# --- the Block1 spool -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def blk(number: int, more: bool, exponent: int = 0) -> Any:
    return BlockOption.BlockwiseTuple(number, more, exponent)  # exponent 0: 16-byte blocks


def test_spool_reassembles_in_order_and_forgets_the_transfer() -> None:
    spool = BlockSpool(100, 4)
    assert spool.feed("k", blk(0, True), b"a" * 16) is None
    assert spool.feed("k", blk(1, True), b"b" * 16) is None
    assert spool.feed("k", blk(2, False), b"c") == b"a" * 16 + b"b" * 16 + b"c"
    assert len(spool) == 0


def test_spool_passes_a_single_last_block_without_keeping_it() -> None:
    spool = BlockSpool(100, 4)
    assert spool.feed("k", blk(0, False), b"short") == b"short"
    assert len(spool) == 0


def test_spool_accepts_a_smaller_block_size_midway_and_a_repeated_block() -> None:
    spool = BlockSpool(100, 4)
    assert spool.feed("k", blk(0, True, 1), b"a" * 32) is None
    assert spool.feed("k", blk(2, True, 0), b"b" * 16) is None  # offset 32 in 16-byte blocks
    assert spool.feed("k", blk(2, True, 0), b"c" * 16) is None  # the same block again replaces it
    assert spool.feed("k", blk(3, False, 0), b"d") == b"a" * 32 + b"c" * 16 + b"d"


def test_spool_refuses_before_buffering_past_the_limit() -> None:
    spool = BlockSpool(40, 4)
    assert spool.feed("k", blk(0, True), b"a" * 16) is None
    assert spool.feed("k", blk(1, True), b"b" * 16) is None
    with pytest.raises(PayloadTooLarge) as refused:
        spool.feed("k", blk(2, True), b"c" * 16)
    assert (refused.value.size, refused.value.limit) == (48, 40)
    assert len(spool) == 0
    with pytest.raises(IncompleteBody):
        spool.feed("k", blk(3, False), b"d")


def test_spool_refuses_an_announced_size_over_the_limit_at_once() -> None:
    spool = BlockSpool(40, 4)
    with pytest.raises(PayloadTooLarge):
        spool.feed("k", blk(0, True), b"a" * 16, size1=41)
    assert len(spool) == 0
    assert spool.feed("k", blk(0, True), b"a" * 16, size1=40) is None


@pytest.mark.parametrize(
    ("block", "payload"),
    [(blk(0, True), b"a" * 15), (blk(0, True), b"a" * 17), (blk(0, False), b"a" * 17), (blk(0, True, 7), b"a")],
)
def test_spool_refuses_malformed_blocks(block: Any, payload: bytes) -> None:
    with pytest.raises(BadRequest):
        BlockSpool(100, 4).feed("k", block, payload)


def test_spool_refuses_gaps_and_orphans() -> None:
    spool = BlockSpool(100, 4)
    with pytest.raises(IncompleteBody):
        spool.feed("k", blk(1, False), b"x")
    assert spool.feed("k", blk(0, True), b"a" * 16) is None
    with pytest.raises(IncompleteBody):
        spool.feed("k", blk(2, False), b"x")
    assert len(spool) == 0


def test_spool_drops_the_least_recently_fed_transfer_beyond_its_bound() -> None:
    spool = BlockSpool(100, 2)
    for key in ("a", "b"):
        assert spool.feed(key, blk(0, True), b"0" * 16) is None
    assert spool.feed("a", blk(1, True), b"1" * 16) is None  # `a` was fed last: `b` is the oldest
    assert spool.feed("c", blk(0, True), b"0" * 16) is None
    assert len(spool) == 2
    with pytest.raises(IncompleteBody):
        spool.feed("b", blk(1, False), b"x")
    assert spool.feed("a", blk(2, False), b"x") == b"0" * 16 + b"1" * 16 + b"x"


def test_spool_forgets_idle_transfers() -> None:
    clock = Clock()
    spool = BlockSpool(100, 4, lifetime_s=10.0, clock=clock)
    assert spool.feed("old", blk(0, True), b"0" * 16) is None
    clock.now = 5.0
    assert spool.feed("new", blk(0, True), b"0" * 16) is None
    clock.now = 11.0
    assert spool.feed("new", blk(1, True), b"1" * 16) is None
    assert len(spool) == 1
    with pytest.raises(IncompleteBody):
        spool.feed("old", blk(1, False), b"x")
