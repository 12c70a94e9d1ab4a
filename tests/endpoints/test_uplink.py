"""Pure tables for the uplink core: Basic credentials, names, query parameters."""

from __future__ import annotations

import base64

import pytest

from endpoints.http import match_publish_path
from endpoints.uplink import (
    MAX_NAME_LENGTH,
    DeviceCredentials,
    Uplink,
    parse_basic_auth,
    parse_command_timeout,
    parse_uplink,
    split_user,
    validate_name,
)
from hawser.errors import BadCredentials, BadRequest, HawserError, InvalidName, MissingCredentials


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "default_app", "expected"),
    [
        (basic("dev1@app1:secret"), None, DeviceCredentials("app1", "dev1", "secret")),
        (basic("dev@ice@app1:secret"), None, DeviceCredentials("app1", "dev@ice", "secret")),
        (basic("dev1@app1:sec:ret"), None, DeviceCredentials("app1", "dev1", "sec:ret")),
        (basic("dev1@app1:"), None, DeviceCredentials("app1", "dev1", "")),
        (basic("dev1:secret"), "app9", DeviceCredentials("app9", "dev1", "secret")),
        (basic("dev1@app1:secret"), "app9", DeviceCredentials("app1", "dev1", "secret")),
        ("basic " + base64.b64encode(b"d@a:p").decode(), None, DeviceCredentials("a", "d", "p")),
        ("  Basic   " + base64.b64encode(b"d@a:p").decode(), None, DeviceCredentials("a", "d", "p")),
        (basic("gr\u00fc\u00dfe@app1:p\u00e4ss"), None, DeviceCredentials("app1", "gr\u00fc\u00dfe", "p\u00e4ss")),
    ],
)
def test_basic_auth_accepts(header: str, default_app: str | None, expected: DeviceCredentials) -> None:
    assert parse_basic_auth(header, default_application=default_app) == expected


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, MissingCredentials),
        ("", MissingCredentials),
        ("   ", MissingCredentials),
        ("Bearer abc", BadCredentials),
        ("Basic", BadCredentials),
        ("Basic ", BadCredentials),
        ("Basic !!!notbase64", BadCredentials),
        ("Basic \u00e4\u00f6\u00fc=", BadCredentials),
        ("Basic ZGV2QGFwcDpwdw", BadCredentials),  # missing padding
        ("Basic ZGV2QGFw cDpwdw==", BadCredentials),
        ("Basic " + base64.b64encode(b"\xff\xfe@a:b").decode(), BadCredentials),
        (basic("dev1@app1"), BadCredentials),  # no colon
        (basic("dev1:secret"), BadCredentials),  # no '@' and no application parameter
        (basic("@app1:secret"), BadCredentials),
        (basic("dev1@:secret"), BadCredentials),
        (basic("d" * (MAX_NAME_LENGTH + 1) + "@a:p"), BadCredentials),
        (basic("d@a:" + "p" * 1025), BadCredentials),
    ],
)
def test_basic_auth_refuses(header: str | None, error: type[HawserError]) -> None:
    with pytest.raises(error) as caught:
        parse_basic_auth(header)
    assert type(caught.value) is error


def test_password_never_in_repr() -> None:
    assert "hunter2" not in repr(parse_basic_auth(basic("d@a:hunter2")))


@pytest.mark.parametrize(
    ("user", "expected"),
    [("d@a", ("a", "d")), ("a@b@c", ("c", "a@b")), ("x", ("dflt", "x"))],
)
def test_split_user_on_last_at(user: str, expected: tuple[str, str]) -> None:
    assert split_user(user, "dflt") == expected


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a\x85b", "a\u00a0b", "a\u2028b", "x" * (MAX_NAME_LENGTH + 1)],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name("channel", name)


@pytest.mark.parametrize("name", ["telemetry", "state", "a/b", "\u00e9v\u00e9nement", "x" * MAX_NAME_LENGTH, "a%20b"])
def test_valid_names(name: str) -> None:
    assert validate_name("channel", name) == name


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("0", 0), ("30", 30), ("3600", 3600)])
def test_command_timeout(raw: str | None, expected: int | None) -> None:
    assert parse_command_timeout(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "1.5", "abc", "3601", "\u0661", " 5"])
def test_command_timeout_refused(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_command_timeout(raw)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("telemetry", None, {}, None), Uplink("telemetry")),
        (("t", None, {}, ""), Uplink("t")),
        (("t", "dev2", {}, "application/json"), Uplink("t", "dev2", "application/json")),
        (("t", None, {"as": "dev2"}, None), Uplink("t", "dev2")),
        (("t", "dev2", {"as": "dev2"}, None), Uplink("t", "dev2")),
        (("t", "", {"as": ""}, None), Uplink("t")),
        (
            ("t", None, {"data_schema": "urn:x", "ct": "30"}, "text/plain"),
            Uplink("t", None, "text/plain", "urn:x", 30),
        ),
        (("t", None, {"commandTimeout": "5"}, None), Uplink("t", command_timeout=5)),
    ],
)
def test_parse_uplink(args: tuple[str, str | None, dict[str, str], str | None], expected: Uplink) -> None:
    assert parse_uplink(*args) == expected


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", None, {}), InvalidName),
        (("tele metry", None, {}), InvalidName),
        (("t\x01", None, {}), InvalidName),
        (("t", "dev 2", {}), InvalidName),
        (("t", None, {"as": "dev\n2"}), InvalidName),
        (("t", "dev2", {"as": "dev3"}), BadRequest),
        (("t", None, {"ct": "soon"}), BadRequest),
        (("t", None, {"data_schema": "a b"}), BadRequest),
    ],
)
def test_parse_uplink_refuses(args: tuple[str, str | None, dict[str, str]], error: type[HawserError]) -> None:
    with pytest.raises(error) as caught:
        parse_uplink(*args, None)
    assert type(caught.value) is error


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/telemetry", ("telemetry", None)),
        ("/v1/telemetry/sensor-1", ("telemetry", "sensor-1")),
        ("/v1/telemetry/a/b", ("telemetry", "a/b")),
        ("/v1/telemetry/", ("telemetry", None)),
        ("/v1/", None),
        ("/v1//x", None),
        ("/v1", None),
        ("/v2/telemetry", None),
        ("/health/live", None),
    ],
)
def test_match_publish_path(path: str, expected: tuple[str, str | None] | None) -> None:
    assert match_publish_path(path) == expected
