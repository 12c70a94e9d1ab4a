"""Rows to documents and to the frozen values of `registry.values`. Pure, no I/O."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from hawser.errors import BadRequest
from registry.credentials import redacted_view
from registry.documents import ApplicationDocument, DeviceDocument, Metadata
from registry.models import Application, Credential, Device
from registry.names import check_device_name
from registry.values import (
    ApplicationInfo,
    DeviceInfo,
    PasswordCredential,
    PskCredential,
    UserCredential,
)
from registry.values import Credential as CredentialValue


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every timestamp we store is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_disabled(spec: Mapping[str, Any]) -> bool:
    core = spec.get("core")
    return isinstance(core, dict) and core.get("disabled") is True


def aliases_of(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The aliases of a device spec; each follows the device-name rule (`InvalidName` if not)."""
    raw = spec.get("alias", [])
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise BadRequest("spec.alias must be a list of strings")
    return tuple(dict.fromkeys(check_device_name(a, "alias") for a in raw))


def gateways_of(spec: Mapping[str, Any]) -> tuple[str, ...]:
    selector = spec.get("gatewaySelector")
    names = selector.get("matchNames", []) if isinstance(selector, dict) else []
    return tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else ()


def application_document(row: Application) -> ApplicationDocument:
    return ApplicationDocument(
        metadata=Metadata(
            name=row.name, uid=row.uid, resource_version=row.resource_version,
            generation=row.generation, creation_timestamp=aware(row.created),
            labels=row.labels, annotations=row.annotations,
        ),
        spec=row.spec, status=row.status,
    )


def device_document(row: Device, credentials: Sequence[Credential]) -> DeviceDocument:
    spec = dict(row.spec)
    if credentials:
        spec["authentication"] = {
            "credentials": [
                redacted_view(c.kind, c.username, c.unique_username is not None) for c in credentials
            ]
        }
    return DeviceDocument(
        metadata=Metadata(
            name=row.name, application=row.application, uid=row.uid,
            resource_version=row.resource_version, generation=row.generation,
            creation_timestamp=aware(row.created), labels=row.labels, annotations=row.annotations,
        ),
        spec=spec, status=row.status,
    )


def application_info(row: Application) -> ApplicationInfo:
    return ApplicationInfo(row.name, row.uid, row.disabled, row.resource_version)


def _credential(row: Credential) -> CredentialValue:
    if row.kind == "user":
        return UserCredential(row.username or "", row.secret, row.unique_username is not None)
    if row.kind == "psk":
        return PskCredential(base64.b64decode(row.secret))
    return PasswordCredential(row.secret)


def device_info(row: Device, credentials: Iterable[Credential]) -> DeviceInfo:
    ttn = row.spec.get("ttn")
    lorawan = row.spec.get("lorawan")
    return DeviceInfo(
        application=row.application, name=row.name, uid=row.uid, disabled=row.disabled,
        credentials=tuple(_credential(c) for c in credentials),
        aliases=tuple(a for a in row.spec.get("alias", []) if isinstance(a, str)),
        gateways=gateways_of(row.spec),
        ttn=ttn if isinstance(ttn, dict) else {},
        resource_version=row.resource_version,
        lorawan=lorawan if isinstance(lorawan, dict) else {},
    )
