"""The HTTP endpoint's one error table, and the Content-Length check (pure)."""

from __future__ import annotations

import json

import pytest

from endpoints.http import error_response
from hawser import errors as e
from hawser.http_body import check_content_length


@pytest.mark.parametrize(
    ("error", "status", "headers"),
    [
        (e.MissingCredentials(), 401, {"www-authenticate": 'Basic realm="hawser"'}),
        (e.BadCredentials(), 401, {"www-authenticate": 'Basic realm="hawser"'}),
        (e.ApplicationDisabled(), 403, {}),
        (e.DeviceDisabled(), 403, {}),
        (e.GatewayNotAllowed(), 403, {}),
        (e.BadJson(), 406, {}),
        (e.InvalidName(), 400, {}),
        (e.BadRequest(), 400, {}),
        (e.PayloadTooLarge(10, 5), 413, {}),
        (e.BusUnavailable(retry_after=3), 503, {"retry-after": "3"}),
        (e.Overloaded(), 503, {"retry-after": "1"}),
        (e.NotFound(), 404, {}),
        (e.Conflict(), 500, {}),  # nothing on the device path raises it: a bug if it does
    ],
)
def test_error_table(error: e.HawserError, status: int, headers: dict[str, str]) -> None:
    response = error_response(error)
    assert response.status_code == status
    for name, value in headers.items():
        assert response.headers[name] == value
    assert response.headers["content-type"] == "application/problem+json"
    body = json.loads(bytes(response.body))
    assert body["status"] == status
    assert body["type"].endswith("/" + error.code)
    if status == 401:
        assert "retry-after" not in response.headers


@pytest.mark.parametrize(("value", "limit"), [(None, 5), ("0", 5), ("5", 5), ("00005", 5)])
def test_content_length_within(value: str | None, limit: int) -> None:
    check_content_length(value, limit)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("6", e.PayloadTooLarge),
        ("99999999999999999999", e.PayloadTooLarge),
        ("-1", e.BadRequest),
        ("abc", e.BadRequest),
        ("", e.BadRequest),
        ("\u0665", e.BadRequest),
    ],
)
def test_content_length_refused(value: str, error: type[e.HawserError]) -> None:
    with pytest.raises(error):
        check_content_length(value, 5)
