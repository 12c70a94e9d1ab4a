"""TTN webhook documents read into `TtnMessage` (pure): every fixture, every malformed case, and the
choices made from a message (event data, data schema, time)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from endpoints._ttn_documents import TtnMessage, normalise_time, parse_v2, parse_v3
from endpoints.ttn import event_data, payload_mode, port_data_schema
from hawser import errors as e
from tests.endpoints.ttn_fixtures import DELETE, DEVICE, load, varied

Parser = Callable[[bytes], TtnMessage]
UP = "uplink_message"
RAW = bytes([0x01, 0x09, 0x2F, 0x01, 0x2A, 0x0C, 0xE4])  # the fixture's frm_payload


def test_v3_uplink_with_decoded_payload_and_two_gateways() -> None:
    body = load("v3_uplink")
    message = parse_v3(body)
    assert (message.kind, message.device_id, message.port, message.channel) == (UP, DEVICE, 2, "2")
    assert message.is_uplink
    # The Network Server's reception time, as Drogue stamps it; nanoseconds kept.
    assert message.time == "2024-05-06T10:21:33.987654321Z"
    assert message.raw == RAW
    assert message.decoded == b'{"temperature":23.51,"humidity":42,"battery":3.3,"status":"ok"}'
    assert message.document is body
    # The best gateway is the one with the highest SNR (listed second, weaker RSSI).
    assert message.extensions == {
        "hwaddr": "260B1A2F", "lorawandeveui": "70B3D57ED0051234", "lorawanport": "2", "lorawanfcnt": "1287",
        "lorawangateway": "gw-roof", "lorawanrssi": "-101", "lorawansnr": "9.5",
    }


def test_v3_uplink_without_decoded_payload() -> None:
    message = parse_v3(load("v3_uplink_undecoded"))
    assert (message.port, message.raw, message.decoded) == (10, b"\x02\x00\xff", None)
    assert message.time == "2024-05-06T10:31:35.301Z"
    # f_cnt 0 is omitted by TTN (proto3 JSON): it reads as 0.
    assert message.extensions["lorawanfcnt"] == "0"
    assert (message.extensions["lorawangateway"], message.extensions["lorawansnr"]) == ("gw-roof", "8")


@pytest.mark.parametrize(
    ("name", "kind", "time"),
    [
        ("v3_join_accept", "join_accept", "2024-05-06T10:02:11.448022617Z"),
        ("v3_downlink_ack", "downlink_ack", "2024-05-06T10:42:01.302118954Z"),
        ("v3_location_solved", "location_solved", "2024-05-06T10:51:12.007Z"),
    ],
)
def test_v3_other_messages(name: str, kind: str, time: str) -> None:
    body = load(name)
    message = parse_v3(body)
    assert (message.kind, message.channel, message.port, message.time) == (kind, kind, None, time)
    assert not message.is_uplink
    assert (message.raw, message.decoded, message.document) == (b"", None, body)
    assert message.extensions == {"hwaddr": "260B1A2F", "lorawandeveui": "70B3D57ED0051234"}


def test_v3_downlink_failed_as_published_without_address_or_time() -> None:
    document = {
        "end_device_ids": {"device_id": "dev1", "application_ids": {"application_id": "app1"}},
        "correlation_ids": ["as:downlink:01E19Z5W3BZBG7CXSJE9C0A3CE"],
        "downlink_failed": {
            "downlink": {"f_port": 15, "frm_payload": "vu8=", "confirmed": True, "priority": "NORMAL"},
            "error": {"namespace": "pkg/networkserver", "name": "application_downlink_too_long", "code": 3},
        },
    }
    message = parse_v3(json.dumps(document).encode())
    assert (message.kind, message.device_id, message.time, message.extensions) == ("downlink_failed", "dev1", None, {})


@pytest.mark.parametrize(
    ("changes", "port", "raw", "time"),
    [
        # TTN omits zero values: no f_port is port 0, no frm_payload an empty payload.
        ([((UP, "f_port"), DELETE), ((UP, "frm_payload"), DELETE)], 0, b"", "2024-05-06T10:21:33.987654321Z"),
        ([((UP, "f_port"), None), ((UP, "frm_payload"), "")], 0, b"", "2024-05-06T10:21:33.987654321Z"),
        ([((UP, "f_port"), 255)], 255, RAW, "2024-05-06T10:21:33.987654321Z"),
        ([((UP, "received_at"), DELETE)], 2, RAW, "2024-05-06T10:21:34.123456789Z"),
        ([((UP, "received_at"), DELETE), (("received_at",), DELETE)], 2, RAW, None),
    ],
)
def test_v3_uplink_defaults(changes: list[tuple[tuple[str, ...], Any]], port: int, raw: bytes,
                            time: str | None) -> None:
    message = parse_v3(varied("v3_uplink", *changes))
    assert (message.port, message.channel, message.raw, message.time) == (port, str(port), raw, time)


def test_v3_gateway_ranking() -> None:
    metadata = [
        {"gateway_ids": {"gateway_id": "no-snr"}, "rssi": -20},
        {"gateway_ids": {"gateway_id": "a"}, "rssi": -110, "snr": 4},
        {"gateway_ids": {"gateway_id": "b"}, "channel_rssi": -90, "snr": 4},  # RSSI breaks the tie
        {"gateway_ids": {}, "snr": 1.5},
    ]
    extensions = parse_v3(varied("v3_uplink", ((UP, "rx_metadata"), metadata))).extensions
    assert (extensions["lorawangateway"], extensions["lorawanrssi"], extensions["lorawansnr"]) == ("b", "-90", "4")
    bare = parse_v3(varied("v3_uplink", ((UP, "rx_metadata"), [{"gateway_ids": {}}]))).extensions
    assert not {"lorawangateway", "lorawanrssi", "lorawansnr"} & bare.keys()
    none = parse_v3(varied("v3_uplink", ((UP, "rx_metadata"), DELETE))).extensions
    assert "lorawangateway" not in none


def test_v2_uplink() -> None:
    body = load("v2_uplink")
    message = parse_v2(body)
    assert (message.kind, message.device_id, message.port, message.channel) == (UP, DEVICE, 3, "3")
    assert message.time == "2019-03-14T08:26:53.531748351Z"
    assert (message.raw, message.decoded) == (b"\x01\x02\x03\x04", b'{"light":1027,"motion":true}')
    assert message.document is body
    assert message.extensions == {
        "lorawanport": "3", "lorawanretry": "true", "hwaddr": "70B3D57ED0051234",
        "lorawandeveui": "70B3D57ED0051234", "lorawanfcnt": "412",
        "lorawangateway": "eui-b827ebfffe6c1a2b", "lorawanrssi": "-58", "lorawansnr": "9.25",
    }


def test_v2_minimal_uplink() -> None:
    message = parse_v2(b'{"dev_id": "d", "port": 0, "payload_raw": null}')
    assert (message.port, message.raw, message.decoded, message.time) == (0, b"", None, None)
    assert message.extensions == {"lorawanport": "0", "lorawanretry": "false"}


TRUNCATED = load("v3_uplink")[:300]
NOT_JSON = [
    b"", b"not json", TRUNCATED, b'{"a": NaN}', b'{"a": -Infinity}', b'{"x": 1e400}', b"\xff{}",
    b"\xef\xbb\xbf{}", b"[" * 100_000, b'{"a":' * 50_000, b'{"x": ' + b"9" * 5000 + b"}", b"{'a': 1}",
]


@pytest.mark.parametrize("parse", [parse_v3, parse_v2])
@pytest.mark.parametrize("body", NOT_JSON, ids=lambda b: repr(b[:16]))
def test_not_json_is_bad_json(parse: Parser, body: bytes) -> None:
    with pytest.raises(e.BadJson):
        parse(body)


@pytest.mark.parametrize("parse", [parse_v3, parse_v2])
@pytest.mark.parametrize("body", [b"[]", b"[{}]", b'"uplink"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_bad_request(parse: Parser, body: bytes) -> None:
    with pytest.raises(e.BadRequest) as raised:
        parse(body)
    assert not isinstance(raised.value, e.BadJson)


ID = ("end_device_ids",)
V3_MALFORMED: list[tuple[tuple[str | int, ...], Any]] = [
    (ID, DELETE), (ID, None), (ID, ["dev"]), (ID, "dev"),
    ((*ID, "device_id"), DELETE), ((*ID, "device_id"), ""), ((*ID, "device_id"), 7),
    ((*ID, "device_id"), "a\nb"), ((*ID, "device_id"), "\x7f"), ((*ID, "device_id"), "d" * 300),
    ((*ID, "dev_addr"), 0x260B1A2F), ((*ID, "dev_eui"), ["70B3D57ED0051234"]),
    ((UP,), DELETE), ((UP,), None), ((UP,), "up"), (("join_accept",), {"session_key_id": "x"}),
    ((UP, "f_port"), -1), ((UP, "f_port"), 256), ((UP, "f_port"), 10**30), ((UP, "f_port"), "2"),
    ((UP, "f_port"), 2.0), ((UP, "f_port"), True), ((UP, "f_port"), [2]),
    ((UP, "f_cnt"), -1), ((UP, "f_cnt"), 2**32), ((UP, "f_cnt"), "1"),
    ((UP, "frm_payload"), "not base64!"), ((UP, "frm_payload"), "AQI"), ((UP, "frm_payload"), "A"),
    ((UP, "frm_payload"), 12), ((UP, "frm_payload"), "AQ\u00e9="), ((UP, "frm_payload"), ["AQ=="]),
    (("received_at",), "yesterday"), (("received_at",), 1714990894), (("received_at",), "2024-05-06T10:21:34"),
    (("received_at",), "2024-13-01T00:00:00Z"), (("received_at",), "2024-02-30T00:00:00Z"),
    (("received_at",), "2024-05-06T24:00:00Z"), (("received_at",), "2024-05-06 10:21:34Z"),
    (("received_at",), "2024-05-06T10:21:34.1234567890Z"), (("received_at",), "2024-05-06T10:21:34+24:00"),
    (("received_at",), "\uff12024-05-06T10:21:34Z"), (("received_at",), "0001-01-01T00:00:00+01:00"),
    ((UP, "received_at"), "2024-05-06T10:21:61Z"),
    ((UP, "rx_metadata"), {"gateway_ids": {}}), ((UP, "rx_metadata"), ["gw"]),
    ((UP, "rx_metadata", 0, "rssi"), "strong"), ((UP, "rx_metadata", 0, "snr"), True),
    ((UP, "rx_metadata", 0, "rssi"), 10**400), ((UP, "rx_metadata", 0, "channel_rssi"), -1e300),
    ((UP, "rx_metadata", 0, "gateway_ids"), "gw-cellar"), ((UP, "rx_metadata", 0, "gateway_ids", "gateway_id"), 1),
]


@pytest.mark.parametrize(("path", "value"), V3_MALFORMED, ids=lambda v: repr(v)[:40])
def test_v3_malformed_is_bad_request(path: tuple[Any, ...], value: Any) -> None:
    body = varied("v3_uplink", (path, value))
    with pytest.raises(e.BadRequest) as raised:
        parse_v3(body)
    assert not isinstance(raised.value, e.BadJson)


V2_MALFORMED: list[tuple[tuple[str | int, ...], Any]] = [
    (("dev_id",), DELETE), (("dev_id",), ""), (("dev_id",), 1),
    (("port",), DELETE), (("port",), None), (("port",), -1), (("port",), 256), (("port",), "3"), (("port",), 3.0),
    (("counter",), -5), (("counter",), "412"), (("is_retry",), "yes"), (("confirmed",), 0),
    (("payload_raw",), 5), (("payload_raw",), "###"), (("hardware_serial",), 1),
    (("metadata",), []), (("metadata", "time"), "noon"), (("metadata", "gateways"), {}),
    (("metadata", "gateways"), ["gw"]), (("metadata", "gateways", 0, "rssi"), "-58"),
    (("metadata", "gateways", 0, "gtw_id"), False),
]


@pytest.mark.parametrize(("path", "value"), V2_MALFORMED, ids=lambda v: repr(v)[:40])
def test_v2_malformed_is_bad_request(path: tuple[Any, ...], value: Any) -> None:
    with pytest.raises(e.BadRequest) as raised:
        parse_v2(varied("v2_uplink", (path, value)))
    assert not isinstance(raised.value, e.BadJson)


@pytest.mark.parametrize("parse", [parse_v3, parse_v2])
@pytest.mark.parametrize(
    "body",
    [
        # A lone surrogate escape is JSON's grammar but no Unicode text: serde_json (Drogue) refuses
        # it, and an event carrying it cannot be written as UTF-8 to the application's WebSocket.
        varied("v3_uplink", ((UP, "decoded_payload"), {"s": "\ud800"})),
        varied("v3_uplink", ((UP, "decoded_payload"), {"\udfff": 1})),
        varied("v3_uplink", (("correlation_ids",), ["as:up:\udbff"])),
        varied("v2_uplink", (("payload_fields",), {"s": ["x\ud800y"]})),
        varied("v3_uplink", (("end_device_ids", "device_id"), "\ud800")),
        # A repeated member name: Hawser would read the last `end_device_ids`, a reader of the
        # `full` document that keeps the first would see another device.
        load("v3_uplink")[:-2] + b', "end_device_ids": {"device_id": "other"}}',
        load("v2_uplink")[:-2] + b', "dev_id": "other"}',
        b'{"end_device_ids": {"device_id": "d", "device_id": "e"}, "join_accept": {}}',
        varied("v3_uplink", ((UP, "decoded_payload"), {"a": 1})).replace(b'"a": 1', b'"a": 1, "a": 2'),
    ],
    ids=["lone-high", "lone-low-key", "correlation", "v2-fields", "device-id", "dup-top", "dup-v2", "dup-ids",
         "dup-decoded"],
)
def test_lone_surrogates_and_repeated_names_are_bad_json(parse: Parser, body: bytes) -> None:
    with pytest.raises(e.BadJson):
        parse(body)


def test_escaped_surrogate_pairs_and_backslashes_are_text() -> None:
    body = varied("v3_uplink", ((UP, "decoded_payload"), {"emoji": "\U0001f600", "path": "\\ud800", "t": "é"}))
    assert b"\\ud83d\\ude00" in body  # json.dumps escapes the pair: the document carries `\ud83d\ude00`
    message = parse_v3(body)
    assert message.decoded == '{"emoji":"\U0001f600","path":"\\\\ud800","t":"é"}'.encode()


def test_deep_decoded_payload_within_the_parser_limit() -> None:
    nested: Any = 1
    for _ in range(200):
        nested = [nested]
    message = parse_v3(varied("v3_uplink", ((UP, "decoded_payload"), nested)))
    assert message.decoded == b"[" * 200 + b"1" + b"]" * 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-06T10:21:34Z", "2024-05-06T10:21:34Z"),
        ("2024-05-06t10:21:34.5z", "2024-05-06T10:21:34.5Z"),
        ("2024-05-06T10:21:34.123456789Z", "2024-05-06T10:21:34.123456789Z"),
        ("2024-05-06T10:21:34.120+02:00", "2024-05-06T08:21:34.120Z"),
        ("2024-12-31T23:30:00-01:45", "2025-01-01T01:15:00Z"),
        ("2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00Z"),
        ("0999-01-01T00:00:00Z", "0999-01-01T00:00:00Z"),
        ("", None),
        (None, None),
    ],
)
def test_normalise_time(text: str | None, expected: str | None) -> None:
    assert normalise_time(text, "t") == expected


@pytest.mark.parametrize(
    ("spec", "mode"),
    [({"payload": "raw"}, "raw"), ({"payload": "fields"}, "fields"), ({"payload": "full"}, "full"),
     ({}, "full"), ({"payload": "RAW"}, "full"), ({"payload": 5}, "full"), ({"payload": None}, "full")],
)
def test_payload_mode(spec: dict[str, object], mode: str) -> None:
    assert payload_mode(spec) == mode


def test_event_data_by_mode() -> None:
    uplink, undecoded, join = parse_v3(load("v3_uplink")), parse_v3(load("v3_uplink_undecoded")), parse_v3(
        load("v3_join_accept"))
    assert event_data(uplink, "raw") == (uplink.raw, "application/octet-stream")
    assert event_data(uplink, "fields") == (uplink.decoded, "application/json")
    assert event_data(uplink, "full") == (uplink.document, "application/json")
    assert event_data(undecoded, "fields") == (b"null", "application/json")  # as Drogue: no decoder, null
    for mode in ("raw", "fields", "full"):
        assert event_data(join, mode) == (join.document, "application/json")


@pytest.mark.parametrize(
    ("spec", "port", "schema"),
    [
        ({"ports": {"2": {"data_schema": "urn:th"}, "5": {"data_schema": "urn:5"}}}, 2, "urn:th"),
        ({"ports": {"1": {"data_schema": "urn:1"}}}, 2, None),
        ({"ports": {"2": {"no_data_schema": "x"}}}, 2, None),
        ({"ports": {"2": {"data_schema": 7}}}, 2, None),
        ({"ports": {"2": {"data_schema": "urn:th"}}}, None, None),
        ({"ports": ["urn"]}, 2, None),
        ({}, 2, None),
    ],
)
def test_port_data_schema(spec: dict[str, object], port: int | None, schema: str | None) -> None:
    assert port_data_schema(spec, port) == schema
