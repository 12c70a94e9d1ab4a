"""Frozen values the registry hands to the rest of Hawser (auth, endpoints), and the narrow
read-side protocol device authentication needs. Nothing here does I/O.

The REST documents (pydantic) live in `registry.documents`; the SQL rows in `registry.models`.
These values are what survives the trip from one to the other that the hot path cares about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class PasswordCredential:
    """`{"pass": ...}`: the device's own password, stored as a PHC hash string
    (`$argon2id$...` for ours, `$2b$...` for bcrypt imported from Drogue)."""

    hash: str


@dataclass(frozen=True, slots=True)
class UserCredential:
    """`{"user": {"username", "password", "unique"}}`: a username/password pair. When `unique`,
    the username alone (with the application) identifies the device."""

    username: str
    hash: str
    unique: bool = False


@dataclass(frozen=True, slots=True)
class PskCredential:
    """`{"psk": {"key": ...}}` for CoAP over DTLS: the key itself is needed there, so it is kept out
    of `repr` (and so out of logs and tracebacks)."""

    key: bytes = field(repr=False)


Credential = PasswordCredential | UserCredential | PskCredential


@dataclass(frozen=True, slots=True)
class ApplicationInfo:
    name: str
    uid: str
    disabled: bool = False
    #: Bumped on every change; caches compare it.
    resource_version: str = ""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What authentication and ingest need to know about a device."""

    application: str
    name: str
    uid: str
    disabled: bool = False
    credentials: tuple[Credential, ...] = ()
    aliases: tuple[str, ...] = ()
    #: Names of the gateway devices allowed to publish for this one (`spec.gatewaySelector`).
    gateways: tuple[str, ...] = ()
    #: `spec.ttn` as JSON: `payload` (raw | fields | full) chooses what TTN webhooks publish.
    ttn: Mapping[str, object] = field(default_factory=dict)
    resource_version: str = ""
    #: `spec.lorawan` as JSON: `ports.<f_port>.data_schema` gives TTN uplinks their dataschema (Drogue).
    lorawan: Mapping[str, object] = field(default_factory=dict)


ChangeKind = Literal["application", "device"]


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """Published to listeners after every committed change, so caches can drop what is stale.
    `device` is None for an application-level change (which affects all its devices)."""

    kind: ChangeKind
    application: str
    device: str | None = None


class ChangeListener(Protocol):
    def __call__(self, change: RegistryChange, /) -> None: ...


class DeviceDirectory(Protocol):
    """The read side of the registry that device authentication uses."""

    async def get_application_info(self, application: str) -> ApplicationInfo | None: ...

    async def get_device_info(self, application: str, device: str) -> DeviceInfo | None: ...

    async def find_device_by_username(self, application: str, username: str) -> DeviceInfo | None:
        """The device holding a `user` credential with this username (unique ones first)."""
        ...

    async def find_device_by_alias(self, application: str, alias: str) -> DeviceInfo | None: ...

    def add_change_listener(self, listener: ChangeListener) -> None: ...
