"""Device credentials as the REST documents carry them, parsed into values. Pure, no I/O.

Accepted (Drogue's forms): `{"pass": "pw"}`, `{"pass": {"plain"|"bcrypt"|"sha512": ...}}`,
`{"user": {"username", "password", "unique"}}` (password in any `pass` form) and
`{"psk": {"key": "<base64>"}}`. Read back, every secret becomes `{"redacted": true}`; sending such
an entry back means "keep the stored secret of the matching credential", so a GET-modify-PUT round
trip never wipes a hash.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

from hawser import passwords
from hawser.errors import BadRequest
from registry.names import MAX_IDENTIFIER, is_identifier

Kind = Literal["pass", "user", "psk"]
#: Longest pre-shared key accepted (the limit of tinydtls, which serves CoAP over DTLS).
MAX_PSK_BYTES = 16
REDACTED: dict[str, Any] = {"redacted": True}


@dataclass(frozen=True, slots=True)
class CredentialInput:
    """One credential from a document. Exactly one of `plain`, `hashed`, `key` is set, or
    `redacted` is True."""

    kind: Kind
    username: str | None = None
    unique: bool = False
    plain: str | None = field(default=None, repr=False)
    hashed: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    redacted: bool = False

    def view(self) -> dict[str, Any]:
        """The redacted form, as reading the device shows it."""
        return redacted_view(self.kind, self.username, self.unique)


def redacted_view(kind: str, username: str | None, unique: bool) -> dict[str, Any]:
    if kind == "user":
        return {"user": {"username": username, "password": dict(REDACTED), "unique": unique}}
    if kind == "psk":
        return {"psk": {"key": dict(REDACTED)}}
    return {"pass": dict(REDACTED)}


def _password(value: object, where: str) -> tuple[str | None, str | None, bool]:
    """(plain, hashed, redacted) from Drogue's `Password` forms."""
    if isinstance(value, str):
        if not value:
            raise BadRequest(f"{where}: empty password")
        return value, None, False
    if isinstance(value, dict) and len(value) == 1:
        ((form, secret),) = value.items()
        if form == "redacted" and secret is True:
            return None, None, True
        if isinstance(secret, str) and secret:
            if form == "plain":
                return secret, None, False
            if form in ("bcrypt", "sha512"):
                return None, _imported_hash(form, secret, where), False
    raise BadRequest(f"{where}: a password is a string or one of plain, bcrypt, sha512")


def _imported_hash(form: str, hashed: str, where: str) -> str:
    """Refuse an imported hash we could never verify, so the mistake shows at import, not at login."""
    if form == "bcrypt":
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise BadRequest(f"{where}: a bcrypt hash starts with $2a$, $2b$ or $2y$")
        return hashed
    try:
        passwords.check_sha512_crypt(hashed)
    except ValueError as e:
        raise BadRequest(f"{where}: {e}") from None
    return hashed


def _one(entry: object, where: str) -> CredentialInput:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise BadRequest(f"{where}: a credential is an object with one of pass, user, psk")
    ((kind, body),) = entry.items()
    if kind == "pass":
        plain, hashed, redacted = _password(body, where)
        return CredentialInput("pass", plain=plain, hashed=hashed, redacted=redacted)
    if kind == "user":
        if not isinstance(body, dict):
            raise BadRequest(f"{where}: user credential must be an object")
        username = body.get("username")
        if not isinstance(username, str) or not is_identifier(username):
            raise BadRequest(f"{where}: user credential needs a username "
                             f"(1 to {MAX_IDENTIFIER} characters, no control characters)")
        unique = body.get("unique", False)
        if not isinstance(unique, bool):
            raise BadRequest(f"{where}: 'unique' must be a boolean")
        plain, hashed, redacted = _password(body.get("password"), where)
        return CredentialInput("user", username, unique, plain, hashed, redacted=redacted)
    if kind == "psk":
        key = body.get("key") if isinstance(body, dict) else None
        if key == REDACTED:
            return CredentialInput("psk", redacted=True)
        try:
            if not isinstance(key, str) or not (raw := base64.b64decode(key, validate=True)):
                raise ValueError
        except (ValueError, binascii.Error):
            raise BadRequest(f"{where}: psk needs a non-empty base64 'key'") from None
        if len(raw) > MAX_PSK_BYTES:
            # tinydtls, the DTLS stack of the CoAP endpoint, cannot use a longer key: refuse it here
            # rather than let every handshake with it fail.
            raise BadRequest(f"{where}: a psk key is at most {MAX_PSK_BYTES} bytes")
        return CredentialInput("psk", key=key)
    raise BadRequest(f"{where}: unsupported credential kind {str(kind)[:20]!r}")


def extract_credentials(spec: dict[str, Any]) -> tuple[dict[str, Any], list[CredentialInput] | None]:
    """Split a device spec into (spec without credentials, parsed credentials or None if absent)."""
    rest = dict(spec)
    found: object = None
    present = False
    for section in ("authentication", "credentials"):
        block = rest.pop(section, None)
        if block is None:
            continue
        if not isinstance(block, dict) or not isinstance(block.get("credentials", []), list):
            raise BadRequest(f"spec.{section}.credentials must be a list")
        if "credentials" in block:
            if present:
                raise BadRequest("give credentials in spec.authentication or spec.credentials, not both")
            present, found = True, block["credentials"]
    if not present:
        return rest, None
    assert isinstance(found, list)
    parsed = [_one(entry, f"credential {i}") for i, entry in enumerate(found)]
    return rest, parsed
