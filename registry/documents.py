"""The JSON documents of the registry REST API (pydantic v2), as Drogue Cloud writes them.

`{metadata: {...}, spec: {...}, status: {...}}`. A device's credentials are parsed out of its spec
(`spec.authentication.credentials`, or Drogue's legacy `spec.credentials.credentials`) by
`registry.credentials`; they are never stored in the spec and never sent back in clear.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from hawser.access import Role
from registry.names import MAX_IDENTIFIER, has_control, is_application_name, is_identifier

#: Label values; keys (of labels and annotations) follow `registry.names.is_identifier`.
MAX_LABEL_VALUE = 1024
#: `expiresIn` at most ten years (a bound keeps the arithmetic of the expiry in range).
MAX_EXPIRES_IN = 10 * 366 * 24 * 3600


def _check_keys(mapping: dict[str, str], what: str) -> None:
    for key in mapping:
        if not is_identifier(key):
            raise PydanticCustomError(
                "key", f"{what} keys are 1 to {MAX_IDENTIFIER} characters without control characters")


class _Model(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, extra="ignore")


class Metadata(_Model):
    """Drogue's `ScopedMetadata`/`NonScopedMetadata`; server-owned fields are ignored on input."""

    name: str = Field(min_length=1)
    application: str | None = None
    uid: str | None = None
    resource_version: str | None = Field(
        default=None, validation_alias="resourceVersion", serialization_alias="resourceVersion"
    )
    generation: int | None = None
    creation_timestamp: datetime | None = Field(
        default=None, validation_alias="creationTimestamp", serialization_alias="creationTimestamp"
    )
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        _check_keys(value, "label")
        if any(len(v) > MAX_LABEL_VALUE or has_control(v) for v in value.values()):
            raise PydanticCustomError(
                "label", f"label values are at most {MAX_LABEL_VALUE} characters without control characters")
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        _check_keys(value, "annotation")
        if any("\x00" in v for v in value.values()):
            raise PydanticCustomError("annotation", "annotation values may not contain NUL")
        return value


class Document(_Model):
    metadata: Metadata
    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] = Field(default_factory=dict)

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase aliases, no nulls in metadata."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ApplicationDocument(Document):
    """An application. Its spec may hold `core.disabled` and `trustAnchors`."""


class DeviceDocument(Document):
    """A device. Its spec may hold `core.disabled`, `alias[]`, `gatewaySelector.matchNames[]`,
    `ttn`, and `authentication.credentials[]` (secrets redacted when read back)."""


_ROLE_SCHEMA = WithJsonSchema({"type": "string", "enum": ["admin", "manager", "reader"]})


class MemberEntry(_Model):
    role: Annotated[Role, _ROLE_SCHEMA]

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return Role.parse(value)
            except ValueError as e:
                raise PydanticCustomError("role", str(e)) from None
        return value


class Members(_Model):
    """Drogue's members document: `{resourceVersion, members: {user: {role}}}`."""

    resource_version: str | None = Field(
        default=None, validation_alias="resourceVersion", serialization_alias="resourceVersion"
    )
    members: dict[str, MemberEntry] = Field(default_factory=dict)

    @field_validator("members")
    @classmethod
    def _users(cls, value: dict[str, MemberEntry]) -> dict[str, MemberEntry]:
        if not all(is_identifier(user) for user in value):
            raise PydanticCustomError(
                "user", f"member user names are 1 to {MAX_IDENTIFIER} characters without control characters")
        return value

    def dump(self) -> dict[str, Any]:
        return {
            **({"resourceVersion": self.resource_version} if self.resource_version else {}),
            "members": {user: {"role": str(entry.role)} for user, entry in self.members.items()},
        }


class TokenRequest(_Model):
    """Body of `POST /api/tokens/v1alpha1`."""

    description: str = Field(default="", max_length=1000)
    #: Applications the token is limited to; absent means the user's full rights.
    scopes: list[str] | None = None
    #: Whom the token is for (superusers only); the caller by default.
    user: str | None = Field(default=None, min_length=1, max_length=256)
    #: Lifetime in seconds; absent means it never expires.
    expires_in: int | None = Field(default=None, validation_alias="expiresIn", serialization_alias="expiresIn",
                                   gt=0, le=MAX_EXPIRES_IN)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not is_identifier(value):
            raise PydanticCustomError("user", "a user name has no control characters")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(is_application_name(s) for s in value):
            raise PydanticCustomError("scope", "scopes are application names")
        return value


class TokenInfo(_Model):
    """A token as listed (never its secret)."""

    id: str
    user: str
    superuser: bool = False
    scopes: list[str] | None = None
    description: str = ""
    created: datetime
    expires: datetime | None = None


class CreatedToken(TokenInfo):
    """The reply to a create: the only time the token itself is shown."""

    token: str
