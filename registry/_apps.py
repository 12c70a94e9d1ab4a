"""Applications and their members: create (with its events topic), read, list, update, delete."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from hawser.access import Principal, Role
from hawser.errors import AlreadyExists, NotFound
from hawser.events import events_topic
from registry._base import StoreBase, check_version, log, new_version
from registry._convert import application_document, application_info, is_disabled
from registry.documents import ApplicationDocument
from registry.models import Application, Member
from registry.names import check_application_name, check_identifier, is_application_name, is_identifier
from registry.selectors import Selector
from registry.values import ApplicationInfo, RegistryChange


def _not_found(name: str) -> NotFound:
    return NotFound(f"application {name[:80]!r} not found")


class ApplicationOps(StoreBase):
    async def get_application_info(self, application: str) -> ApplicationInfo | None:
        if not is_application_name(application):  # never send what cannot exist to the database
            return None
        async with self._sessions() as session:
            row = await session.get(Application, application)
            return application_info(row) if row else None

    async def _exists(self, name: str) -> bool:
        async with self._sessions() as session:
            return await session.get(Application, name) is not None

    async def _fresh_topic(self, name: str) -> None:
        """Purge whatever an earlier application of this name left on the bus, then create the
        topic, so a new owner of a name never reads a former owner's events."""
        if self._bus is not None:
            await self._bus.delete_topic(events_topic(name))
            await self._bus.ensure_topic(events_topic(name))

    async def create_application(
        self, document: ApplicationDocument, *, creator: str | None = None
    ) -> ApplicationDocument:
        """Create the application with a fresh, empty events topic (made before the row commits);
        the creator becomes its admin. Raises `InvalidName`, `AlreadyExists`, or the bus's errors.

        The topic is only touched once the name is known to be free, so a refused create never
        harms an existing application's topic. On SQLite (one database-wide write lock) the bus
        work comes before the transaction, under a per-name lock of this process; on PostgreSQL it
        runs after the insert, whose uncommitted index entry holds back any other creator of the
        name (who then gets `AlreadyExists`) until this transaction ends.
        """
        name = check_application_name(document.metadata.name)
        if creator is not None:
            check_identifier(creator, "user name")
        meta = document.metadata
        row = Application(
            name=name, uid=new_version(), labels=dict(meta.labels),
            annotations=dict(meta.annotations), spec=dict(document.spec),
            status=dict(document.status), resource_version=new_version(), generation=1,
            created=datetime.now(UTC), disabled=is_disabled(document.spec),
        )
        exists = AlreadyExists(f"application {name!r} exists already")
        async with self._name_lock(name):
            if self._serial_writes:
                if await self._exists(name):
                    raise exists
                await self._fresh_topic(name)
            async with self._write() as session:
                if await session.get(Application, name) is not None:
                    raise exists
                session.add(row)
                if creator:
                    session.add(Member(application=name, user=creator, role=str(Role.ADMIN)))
                try:
                    await session.flush()
                except IntegrityError:
                    raise exists from None
                if not self._serial_writes:
                    await self._fresh_topic(name)
        self._notify(RegistryChange("application", name))
        return application_document(row)

    async def get_application(self, name: str) -> ApplicationDocument:
        async with self._sessions() as session:
            row = await session.get(Application, name)
            if row is None:
                raise _not_found(name)
            return application_document(row)

    async def list_applications(
        self, *, principal: Principal | None = None, selector: Selector | None = None
    ) -> list[ApplicationDocument]:
        """Applications by name; with a `principal`, only those it may see (a superuser: all
        within its scopes; anyone else: those it is a member of, within its scopes)."""
        query = select(Application).order_by(Application.name)
        if principal is not None and not principal.superuser:
            query = query.join(Member, Member.application == Application.name).where(
                Member.user == principal.user
            )
        if principal is not None and principal.scopes is not None:
            query = query.where(Application.name.in_(sorted(principal.scopes)))
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return [
            application_document(r) for r in rows if selector is None or selector.matches(r.labels)
        ]

    async def update_application(self, document: ApplicationDocument) -> ApplicationDocument:
        """Replace labels, annotations and spec (and status if the document has one)."""
        name = document.metadata.name
        async with self._write() as session:
            row = await session.get(Application, name, with_for_update=True)
            if row is None:
                raise _not_found(name)
            check_version(document.metadata.resource_version, row.resource_version)
            row.labels = dict(document.metadata.labels)
            row.annotations = dict(document.metadata.annotations)
            row.spec = dict(document.spec)
            if "status" in document.model_fields_set:
                row.status = dict(document.status)
            row.disabled = is_disabled(document.spec)
            row.resource_version = new_version()
            row.generation += 1
        self._notify(RegistryChange("application", name))
        return application_document(row)

    async def delete_application(self, name: str, *, resource_version: str | None = None) -> None:
        """Delete the application, its devices (cascade) and its events topic.

        On PostgreSQL the topic goes before the commit, under the row's lock, so a bus failure
        leaves the application in place and the delete can be retried. On SQLite it goes after
        the commit (never wait on the bus holding the database-wide write lock); should that fail,
        the leftover topic is logged and purged when the name is next created.
        """
        if not is_application_name(name):
            raise _not_found(name)
        async with self._name_lock(name):
            async with self._write() as session:
                row = await session.get(Application, name, with_for_update=True)
                if row is None:
                    raise _not_found(name)
                check_version(resource_version, row.resource_version)
                await session.delete(row)
                await session.flush()
                if self._bus is not None and not self._serial_writes:
                    await self._bus.delete_topic(events_topic(name))
            if self._bus is not None and self._serial_writes:
                try:
                    await self._bus.delete_topic(events_topic(name))
                except Exception:
                    log.warning("application %r deleted, but not its topic (purged on re-create)",
                                name, exc_info=True)
        self._notify(RegistryChange("application", name))

    # --- members ---------------------------------------------------------------------------------

    async def member_role(self, application: str, user: str) -> Role | None:
        if not is_application_name(application) or not is_identifier(user):
            return None
        async with self._sessions() as session:
            role = await session.scalar(
                select(Member.role).where(Member.application == application, Member.user == user)
            )
        return Role.parse(role) if role else None

    async def get_members(self, application: str) -> tuple[str, dict[str, Role]]:
        """(the application's resourceVersion, {user: role})."""
        async with self._sessions() as session:
            row = await session.get(Application, application)
            if row is None:
                raise _not_found(application)
            members = (
                await session.execute(
                    select(Member.user, Member.role)
                    .where(Member.application == application).order_by(Member.user)
                )
            ).all()
        return row.resource_version, {user: Role.parse(role) for user, role in members}

    async def set_members(
        self, application: str, members: dict[str, Role], *, resource_version: str | None = None
    ) -> str:
        """Replace the member list; returns the new resourceVersion of the application."""
        for user in members:
            check_identifier(user, "member user name")
        async with self._write() as session:
            row = await session.get(Application, application, with_for_update=True)
            if row is None:
                raise _not_found(application)
            check_version(resource_version, row.resource_version)
            await session.execute(delete(Member).where(Member.application == application))
            session.add_all(
                Member(application=application, user=u, role=str(r)) for u, r in members.items()
            )
            row.resource_version = new_version()
            row.generation += 1
            return row.resource_version
