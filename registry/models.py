"""The SQL tables of the registry (SQLAlchemy 2, typed `Mapped[...]`).

Natural keys throughout: an application is its name, a device is (application, name), so the hot-path
reads of device authentication are one query on an index with no join to `applications`. Secrets
never sit in `spec`: credentials have their own table holding only hashes (the PSK key, which DTLS
needs in clear, is the one exception). The Alembic revision in `registry/migrations` creates exactly this.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = dict[str, Any]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {Json: JSON, datetime: DateTime(timezone=True)}


class Application(Base):
    __tablename__ = "applications"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    labels: Mapped[Json] = mapped_column(default=dict)
    annotations: Mapped[Json] = mapped_column(default=dict)
    spec: Mapped[Json] = mapped_column(default=dict)
    status: Mapped[Json] = mapped_column(default=dict)
    resource_version: Mapped[str] = mapped_column(String(36))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[datetime]
    #: Copy of `spec.core.disabled`, so the hot path need not parse the spec.
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Device(Base):
    __tablename__ = "devices"

    application: Mapped[str] = mapped_column(
        String(63), ForeignKey("applications.name", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    labels: Mapped[Json] = mapped_column(default=dict)
    annotations: Mapped[Json] = mapped_column(default=dict)
    #: The spec without `authentication`/`credentials` (those live in `credentials`).
    spec: Mapped[Json] = mapped_column(default=dict)
    status: Mapped[Json] = mapped_column(default=dict)
    resource_version: Mapped[str] = mapped_column(String(36))
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Credential(Base):
    """One entry of a device's credential list, in order (`position`)."""

    __tablename__ = "credentials"
    __table_args__ = (
        ForeignKeyConstraint(
            ["application", "device"], ["devices.application", "devices.name"], ondelete="CASCADE"
        ),
        # NULLs are distinct on both SQLite and PostgreSQL: only unique usernames collide.
        UniqueConstraint("application", "unique_username", name="uq_credentials_unique_username"),
        Index("ix_credentials_username", "application", "username"),
    )

    application: Mapped[str] = mapped_column(String(63), primary_key=True)
    device: Mapped[str] = mapped_column(String(256), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # pass | user | psk
    username: Mapped[str | None] = mapped_column(String(256))
    #: The username again when the credential says `unique`, else NULL (for the constraint).
    unique_username: Mapped[str | None] = mapped_column(String(256))
    #: PHC hash for pass/user; base64 key for psk.
    secret: Mapped[str] = mapped_column(Text)


class DeviceAlias(Base):
    __tablename__ = "device_aliases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["application", "device"], ["devices.application", "devices.name"], ondelete="CASCADE"
        ),
    )

    application: Mapped[str] = mapped_column(String(63), primary_key=True)
    alias: Mapped[str] = mapped_column(String(256), primary_key=True)
    device: Mapped[str] = mapped_column(String(256))


class Member(Base):
    __tablename__ = "members"

    application: Mapped[str] = mapped_column(
        String(63), ForeignKey("applications.name", ondelete="CASCADE"), primary_key=True
    )
    user: Mapped[str] = mapped_column(String(256), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16))


class AccessToken(Base):
    __tablename__ = "access_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Hex sha256 of the whole token (tokens are 256-bit random: a fast hash is right here).
    hash: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(256), index=True)
    superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    scopes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime]
    expires: Mapped[datetime | None]


__all__ = ["AccessToken", "Application", "Base", "Credential", "Device", "DeviceAlias", "Member"]
