"""Devices: CRUD with their credentials and aliases, and the hot-path reads of device auth
(each one SQL statement on a primary key or index)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hawser.errors import AlreadyExists, BadRequest, NotFound
from hawser.passwords import hash_password
from registry._base import StoreBase, check_version, new_version
from registry._convert import aliases_of, device_document, device_info, is_disabled
from registry.credentials import CredentialInput, extract_credentials
from registry.documents import DeviceDocument
from registry.models import Application, Credential, Device, DeviceAlias
from registry.names import check_device_name, is_application_name, is_device_name, is_identifier
from registry.selectors import Selector
from registry.values import DeviceInfo, RegistryChange

_TAKEN = "an alias or unique username of this device is used by another device of the application"


def _with_credentials(*where: Any) -> Any:
    """SELECT device, credential ... (one row per credential; typed Any because the shape of
    `Select`'s type parameters differs between SQLAlchemy 2.0 and 2.1)."""
    return (
        select(Device, Credential)
        .outerjoin(Credential, and_(Credential.application == Device.application,
                                    Credential.device == Device.name))
        .where(*where)
        .order_by(Credential.position)
    )


def _hash_all(inputs: Sequence[CredentialInput]) -> list[str | None]:
    """Hash the plain passwords (CPU-bound: runs in a worker thread)."""
    return [hash_password(c.plain) if c.plain is not None else None for c in inputs]


async def _hashes(inputs: Sequence[CredentialInput] | None) -> list[str | None]:
    """Hash before any write transaction: SQLite's write lock is database-wide, and Argon2 is slow."""
    return await asyncio.to_thread(_hash_all, inputs) if inputs else []


def _credential_rows(
    application: str, device: str, inputs: Sequence[CredentialInput], hashes: Sequence[str | None],
    stored: Sequence[Credential],
) -> list[Credential]:
    """New rows for `inputs` (with their `hashes`); a redacted input takes the secret of a
    matching stored credential."""
    unused = list(stored)
    rows: list[Credential] = []
    for position, (given, hashed) in enumerate(zip(inputs, hashes, strict=True)):
        if given.redacted:
            match = next((s for s in unused if s.kind == given.kind and s.username == given.username
                          and (s.unique_username is not None) == given.unique), None)
            if match is None:
                raise BadRequest(f"credential {position} is redacted but matches no stored credential")
            unused.remove(match)
            secret = match.secret
        else:
            secret = hashed or given.hashed or given.key or ""
        rows.append(Credential(
            application=application, device=device, position=position, kind=given.kind,
            username=given.username, unique_username=given.username if given.unique else None,
            secret=secret,
        ))
    return rows


def _possible(application: str, device: str) -> bool:
    """Whether such a device (or alias) could exist: the others are never sent to the database."""
    return is_application_name(application) and is_device_name(device)


def _not_found(application: str, device: str) -> NotFound:
    return NotFound(f"device {device[:80]!r} not found in application {application[:80]!r}")


class DeviceOps(StoreBase):
    # --- hot path (DeviceDirectory) --------------------------------------------------------------

    async def _info(self, query: Any) -> DeviceInfo | None:
        async with self._sessions() as session:
            rows: Sequence[tuple[Device, Credential | None]] = (await session.execute(query)).all()
        if not rows:
            return None
        return device_info(rows[0][0], [c for _, c in rows if c is not None])

    async def get_device_info(self, application: str, device: str) -> DeviceInfo | None:
        if not _possible(application, device):
            return None
        return await self._info(
            _with_credentials(Device.application == application, Device.name == device)
        )

    async def find_device_by_username(self, application: str, username: str) -> DeviceInfo | None:
        if not is_application_name(application) or not is_identifier(username):
            return None
        owner = (
            select(Credential.device)
            .where(Credential.application == application, Credential.username == username,
                   Credential.kind == "user")
            .order_by(Credential.unique_username.is_(None), Credential.device)
            .limit(1).scalar_subquery()
        )
        return await self._info(_with_credentials(Device.application == application, Device.name == owner))

    async def find_device_by_alias(self, application: str, alias: str) -> DeviceInfo | None:
        if not _possible(application, alias):
            return None
        owner = (
            select(DeviceAlias.device)
            .where(DeviceAlias.application == application, DeviceAlias.alias == alias)
            .scalar_subquery()
        )
        return await self._info(_with_credentials(Device.application == application, Device.name == owner))

    # --- CRUD ------------------------------------------------------------------------------------

    async def _stored(self, session: AsyncSession, application: str, device: str) -> list[Credential]:
        return list((await session.scalars(
            select(Credential).where(Credential.application == application, Credential.device == device)
            .order_by(Credential.position)
        )).all())

    async def create_device(self, application: str, document: DeviceDocument) -> DeviceDocument:
        name = check_device_name(document.metadata.name)
        spec, inputs = extract_credentials(document.spec)
        aliases = aliases_of(spec)
        credentials = _credential_rows(application, name, inputs or [], await _hashes(inputs), [])
        row = Device(
            application=application, name=name, uid=new_version(),
            labels=dict(document.metadata.labels), annotations=dict(document.metadata.annotations),
            spec=spec, status=dict(document.status), resource_version=new_version(), generation=1,
            created=datetime.now(UTC), disabled=is_disabled(spec),
        )
        async with self._write() as session:
            if await session.get(Application, application) is None:
                raise NotFound(f"application {application[:80]!r} not found")
            if await session.get(Device, (application, name)) is not None:
                raise AlreadyExists(f"device {name[:80]!r} exists already in {application!r}")
            session.add(row)
            await session.flush()
            session.add_all(credentials)
            session.add_all(DeviceAlias(application=application, alias=a, device=name) for a in aliases)
            try:
                await session.flush()
            except IntegrityError:
                raise AlreadyExists(_TAKEN) from None
        self._notify(RegistryChange("device", application, name))
        return device_document(row, credentials)

    async def get_device(self, application: str, device: str) -> DeviceDocument:
        async with self._sessions() as session:
            row = await session.get(Device, (application, device))
            if row is None:
                raise _not_found(application, device)
            return device_document(row, await self._stored(session, application, device))

    async def list_devices(self, application: str, *, selector: Selector | None = None) -> list[DeviceDocument]:
        """The devices of an application, by name (NotFound if the application does not exist)."""
        async with self._sessions() as session:
            if await session.get(Application, application) is None:
                raise NotFound(f"application {application[:80]!r} not found")
            rows: Sequence[tuple[Device, Credential | None]] = (await session.execute(
                _with_credentials(Device.application == application).order_by(None)
                .order_by(Device.name, Credential.position)
            )).all()
        grouped: dict[str, tuple[Device, list[Credential]]] = {}
        for device, credential in rows:
            entry = grouped.setdefault(device.name, (device, []))
            if credential is not None:
                entry[1].append(credential)
        return [device_document(d, creds) for d, creds in grouped.values()
                if selector is None or selector.matches(d.labels)]

    async def update_device(self, application: str, document: DeviceDocument) -> DeviceDocument:
        """Replace labels, annotations and spec (status if given). Credentials in the document
        replace the stored ones; a document without credentials keeps them."""
        name = document.metadata.name
        spec, inputs = extract_credentials(document.spec)
        aliases = aliases_of(spec)
        hashes = await _hashes(inputs)
        async with self._write() as session:
            row = await session.get(Device, (application, name), with_for_update=True)
            if row is None:
                raise _not_found(application, name)
            check_version(document.metadata.resource_version, row.resource_version)
            stored = await self._stored(session, application, name)
            if inputs is not None:
                new = _credential_rows(application, name, inputs, hashes, stored)
                await session.execute(delete(Credential).where(
                    Credential.application == application, Credential.device == name))
                for gone in stored:  # their keys are reused by the new rows
                    session.expunge(gone)
                session.add_all(new)
                stored = new
            await session.execute(delete(DeviceAlias).where(
                DeviceAlias.application == application, DeviceAlias.device == name))
            session.add_all(DeviceAlias(application=application, alias=a, device=name) for a in aliases)
            row.labels = dict(document.metadata.labels)
            row.annotations = dict(document.metadata.annotations)
            row.spec = spec
            if "status" in document.model_fields_set:
                row.status = dict(document.status)
            row.disabled = is_disabled(spec)
            row.resource_version = new_version()
            row.generation += 1
            try:
                await session.flush()
            except IntegrityError:
                raise AlreadyExists(_TAKEN) from None
        self._notify(RegistryChange("device", application, name))
        return device_document(row, stored)

    async def delete_device(self, application: str, device: str, *, resource_version: str | None = None) -> None:
        async with self._write() as session:
            row = await session.get(Device, (application, device), with_for_update=True)
            if row is None:
                raise _not_found(application, device)
            check_version(resource_version, row.resource_version)
            await session.delete(row)
        self._notify(RegistryChange("device", application, device))
