"""Where a WebSocket handshake's credential comes from, and how group ids are namespaced (pure)."""

from __future__ import annotations

import base64

import pytest

from hawser.errors import BadCredentials, BadRequest, MissingCredentials
from integration._credentials import TokenCredential, consumer_group, credential_from


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("authorization", "param", "expected"),
    [
        ("Bearer abc", None, TokenCredential("abc")),
        ("bearer  abc ", None, TokenCredential("abc")),
        (None, "xyz", TokenCredential("xyz")),
        ("Bearer header-wins", "param", TokenCredential("header-wins")),
        (basic("alice:tok:en"), None, TokenCredential("tok:en", "alice")),
    ],
)
def test_credential_sources(authorization: str | None, param: str | None, expected: TokenCredential) -> None:
    assert credential_from(authorization, param) == expected


@pytest.mark.parametrize("authorization", ["Bearer", "Token abc", "Basic !!!", basic("alice"), basic(":t"),
                                           basic("alice:"), "Basic " + base64.b64encode(b"\xff:x").decode()])
def test_malformed_headers_are_bad_credentials(authorization: str) -> None:
    with pytest.raises(BadCredentials):
        credential_from(authorization, "ignored-when-a-header-is-there")


@pytest.mark.parametrize("param", [None, ""])
def test_nothing_is_missing_credentials(param: str | None) -> None:
    with pytest.raises(MissingCredentials):
        credential_from(None, param)


def test_repr_hides_the_token() -> None:
    assert "s3cret" not in repr(credential_from("Bearer s3cret", None))


def test_group_ids_are_namespaced_by_application() -> None:
    assert consumer_group("app", None) is None
    assert consumer_group("app", "g1") == "websocket:app:g1"
    assert consumer_group("a-b", "c") != consumer_group("a", "b-c")


@pytest.mark.parametrize("group_id", ["", "has space", "x" * 201, "tab\t"])
def test_bad_group_ids(group_id: str) -> None:
    with pytest.raises(BadRequest):
        consumer_group("app", group_id)
