"""Parsing of registry documents and device credentials (pure), and the OpenAPI route table."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Route

from hawser.access import Role
from hawser.errors import BadRequest
from registry.api import routes
from registry.credentials import CredentialInput, extract_credentials
from registry.documents import DeviceDocument, Members
from registry.openapi import OPERATIONS, openapi_document

# Drepper's first SHA-crypt test vector ("Hello world!").
SHA512_HASH = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"pass": "pw"}, CredentialInput("pass", plain="pw")),
        ({"pass": {"plain": "pw"}}, CredentialInput("pass", plain="pw")),
        ({"pass": {"bcrypt": "$2b$04$abc"}}, CredentialInput("pass", hashed="$2b$04$abc")),
        ({"pass": {"sha512": SHA512_HASH}}, CredentialInput("pass", hashed=SHA512_HASH)),
        ({"pass": {"redacted": True}}, CredentialInput("pass", redacted=True)),
        ({"user": {"username": "u", "password": "p"}}, CredentialInput("user", "u", plain="p")),
        ({"user": {"username": "u", "password": {"bcrypt": "$2b$h"}, "unique": True}},
         CredentialInput("user", "u", True, hashed="$2b$h")),
        ({"psk": {"key": "AAEC"}}, CredentialInput("psk", key="AAEC")),
        ({"psk": {"key": "AAECAwQFBgcICQoLDA0ODw=="}}, CredentialInput("psk", key="AAECAwQFBgcICQoLDA0ODw==")),
        ({"psk": {"key": {"redacted": True}}}, CredentialInput("psk", redacted=True)),
    ],
)
def test_credential_forms(entry: dict[str, Any], expected: CredentialInput) -> None:
    spec, parsed = extract_credentials({"authentication": {"credentials": [entry]}, "alias": ["a"]})
    assert spec == {"alias": ["a"]}
    assert parsed == [expected]


def test_legacy_location() -> None:
    spec, parsed = extract_credentials({"credentials": {"credentials": [{"pass": "pw"}]}, "core": {}})
    assert spec == {"core": {}}
    assert parsed == [CredentialInput("pass", plain="pw")]


def test_absent_versus_empty() -> None:
    assert extract_credentials({"x": 1}) == ({"x": 1}, None)
    assert extract_credentials({"authentication": {"credentials": []}}) == ({}, [])


@pytest.mark.parametrize(
    "spec",
    [
        {"authentication": {"credentials": [{"pass": ""}]}},
        {"authentication": {"credentials": [{"pass": 3}]}},
        {"authentication": {"credentials": [{"pass": {"md5": "x"}}]}},
        {"authentication": {"credentials": [{"pass": {"bcrypt": "$6$x$y"}}]}},
        {"authentication": {"credentials": [{"pass": {"sha512": "$6$x$y"}}]}},
        {"authentication": {"credentials": [{"pass": {"sha512": SHA512_HASH.replace("$6$", "$6$rounds=2000000$")}}]}},
        {"authentication": {"credentials": [{"user": {"username": "u", "password": {"sha512": "$2b$04$abc"}}}]}},
        {"authentication": {"credentials": [{"user": {"password": "p"}}]}},
        {"authentication": {"credentials": [{"user": {"username": "u", "password": "p", "unique": "yes"}}]}},
        {"authentication": {"credentials": [{"psk": {"key": "not base64!"}}]}},
        {"authentication": {"credentials": [{"psk": {"key": "AAECAwQFBgcICQoLDA0ODxA="}}]}},  # 17 bytes
        {"authentication": {"credentials": [{"cert": "x"}]}},
        {"authentication": {"credentials": [{"pass": "a", "user": {}}]}},
        {"authentication": {"credentials": "pw"}},
        {"authentication": {"credentials": [{"pass": "a"}]}, "credentials": {"credentials": []}},
    ],
)
def test_bad_credentials(spec: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        extract_credentials(spec)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ({"bcrypt": "$6$x$y"}, "credential 0: a bcrypt hash starts with $2a$, $2b$ or $2y$"),
        ({"sha512": "$2b$04$abc"}, "credential 0: not a SHA-512 crypt hash"),
        ({"sha512": SHA512_HASH.replace("$6$", "$6$rounds=2000000$")}, "rounds above 1000000"),
    ],
)
def test_imported_hash_refused_with_reason(password: dict[str, str], reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        extract_credentials({"authentication": {"credentials": [{"pass": password}]}})
    assert reason in caught.value.detail


def test_plain_password_not_in_repr() -> None:
    assert "s3cret" not in repr(CredentialInput("pass", plain="s3cret"))


def test_device_document_aliases() -> None:
    doc = DeviceDocument.model_validate(
        {"metadata": {"name": "d", "resourceVersion": "v1", "creationTimestamp": "2024-01-01T00:00:00Z",
                      "labels": {"a": "b"}}, "spec": {"core": {"disabled": True}}}
    )
    assert doc.metadata.resource_version == "v1"
    assert doc.dump()["metadata"]["resourceVersion"] == "v1"
    assert doc.dump()["metadata"]["creationTimestamp"].startswith("2024-01-01T00:00:00")


def test_members_document() -> None:
    members = Members.model_validate({"resourceVersion": "r", "members": {"bob": {"role": "Manager"}}})
    assert members.members["bob"].role is Role.MANAGER
    assert members.dump() == {"resourceVersion": "r", "members": {"bob": {"role": "manager"}}}


def test_openapi_table_matches_routes() -> None:
    mounted = {
        (method.lower(), route.path)
        for route in routes(None, None)  # type: ignore[arg-type]  # only the table is read
        if isinstance(route, Route)
        for method in (route.methods or ()) if method != "HEAD"
    }
    documented = {(op[0], op[1]) for op in OPERATIONS}
    assert mounted - documented == {("get", "/api/registry/v1alpha1/openapi.json")}
    assert documented <= mounted
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    for schema in ("ApplicationDocument", "DeviceDocument", "Members", "CreatedToken", "Problem"):
        assert schema in document["components"]["schemas"]
