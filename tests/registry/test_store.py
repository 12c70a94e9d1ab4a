"""The SQL store on SQLite and PostgreSQL: CRUD, optimistic concurrency, cascades, change
notifications, hashed credentials and the device-auth reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from hawser import passwords
from hawser.access import Principal, Role
from hawser.errors import AlreadyExists, BadRequest, InvalidName, NotFound, StaleResourceVersion
from registry.documents import ApplicationDocument, DeviceDocument
from registry.selectors import parse_selector
from registry.store import RegistryStore
from registry.values import PasswordCredential, PskCredential, RegistryChange, UserCredential


def app_doc(name: str, **extra: Any) -> ApplicationDocument:
    return ApplicationDocument.model_validate({"metadata": {"name": name, **extra.pop("meta", {})}, **extra})


def dev_doc(name: str, spec: dict[str, Any] | None = None, **meta: Any) -> DeviceDocument:
    return DeviceDocument.model_validate({"metadata": {"name": name, **meta}, "spec": spec or {}})


async def test_migrations_create_the_schema(store: RegistryStore) -> None:
    async with store.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == "0001"
        for table in ("applications", "devices", "credentials", "device_aliases", "members", "access_tokens"):
            await conn.execute(text(f"SELECT count(*) FROM {table}"))  # noqa: S608


async def test_open_twice_is_idempotent(db_url: str) -> None:
    for _ in range(2):
        opened = await RegistryStore.open(db_url)
        await opened.aclose()
        await opened.aclose()


async def test_application_crud(store: RegistryStore) -> None:
    created = await store.create_application(app_doc("app", meta={"labels": {"env": "prod"}}), creator="bob")
    assert created.metadata.uid
    assert created.metadata.resource_version
    assert created.metadata.generation == 1
    assert created.metadata.creation_timestamp is not None
    assert await store.member_role("app", "bob") is Role.ADMIN
    got = await store.get_application("app")
    assert got.dump() == created.dump()

    update = app_doc("app", spec={"core": {"disabled": True}},
                     meta={"resourceVersion": created.metadata.resource_version})
    updated = await store.update_application(update)
    assert updated.metadata.generation == 2
    assert updated.metadata.resource_version != created.metadata.resource_version
    assert updated.metadata.labels == {}
    info = await store.get_application_info("app")
    assert info is not None
    assert info.disabled
    assert info.uid == created.metadata.uid

    with pytest.raises(StaleResourceVersion):
        await store.update_application(update)  # the version it names is gone now
    with pytest.raises(StaleResourceVersion):
        await store.delete_application("app", resource_version=created.metadata.resource_version)
    await store.delete_application("app", resource_version=updated.metadata.resource_version)
    with pytest.raises(NotFound):
        await store.get_application("app")
    assert await store.get_application_info("app") is None
    with pytest.raises(NotFound):
        await store.delete_application("app")


async def test_duplicates_and_bad_names(store: RegistryStore) -> None:
    await store.create_application(app_doc("dup"))
    with pytest.raises(AlreadyExists):
        await store.create_application(app_doc("dup"))
    with pytest.raises(InvalidName):
        await store.create_application(app_doc("Not_Valid"))
    await store.create_device("dup", dev_doc("d"))
    with pytest.raises(AlreadyExists):
        await store.create_device("dup", dev_doc("d"))
    with pytest.raises(InvalidName):
        await store.create_device("dup", dev_doc("a/b"))
    with pytest.raises(NotFound):
        await store.create_device("nope", dev_doc("d"))


async def test_listing_visibility_and_selectors(store: RegistryStore) -> None:
    await store.create_application(app_doc("a1", meta={"labels": {"env": "prod"}}), creator="alice")
    await store.create_application(app_doc("a2", meta={"labels": {"env": "dev"}}), creator="alice")
    await store.create_application(app_doc("b1"), creator="bob")

    def names(docs: list[Any]) -> list[str]:
        return [d.metadata.name for d in docs]

    assert names(await store.list_applications()) == ["a1", "a2", "b1"]
    assert names(await store.list_applications(principal=Principal("alice"))) == ["a1", "a2"]
    assert names(await store.list_applications(principal=Principal("bob"))) == ["b1"]
    assert names(await store.list_applications(principal=Principal("nobody"))) == []
    assert names(await store.list_applications(principal=Principal("root", superuser=True))) == ["a1", "a2", "b1"]
    scoped = Principal("alice", scopes=frozenset({"a2", "b1"}))
    assert names(await store.list_applications(principal=scoped)) == ["a2"]
    assert names(await store.list_applications(selector=parse_selector("env in (prod,dev),env!=dev"))) == ["a1"]

    await store.create_device("a1", dev_doc("x"))
    await store.create_device("a1", DeviceDocument.model_validate(
        {"metadata": {"name": "y", "labels": {"kind": "sensor"}}}))
    devices = await store.list_devices("a1", selector=parse_selector("kind=sensor"))
    assert [d.metadata.name for d in devices] == ["y"]
    assert [d.metadata.name for d in await store.list_devices("a1")] == ["x", "y"]
    with pytest.raises(NotFound):
        await store.list_devices("zz")


CREDENTIALS = [
    {"pass": "first-password"},
    {"user": {"username": "meter-7", "password": "second-password", "unique": True}},
    {"psk": {"key": "AAECAw=="}},
]


async def test_device_credentials_hashed_and_redacted(store: RegistryStore) -> None:
    await store.create_application(app_doc("app"))
    spec = {"alias": ["urn:x"], "gatewaySelector": {"matchNames": ["gw"]}, "ttn": {"payload": "raw"},
            "authentication": {"credentials": CREDENTIALS}}
    created = await store.create_device("app", dev_doc("dev", spec))
    for doc in (created, await store.get_device("app", "dev"), *(await store.list_devices("app"))):
        dumped = str(doc.dump())
        assert "first-password" not in dumped
        assert "second-password" not in dumped
        assert "AAECAw" not in dumped
        assert doc.spec["authentication"]["credentials"][0] == {"pass": {"redacted": True}}

    info = await store.get_device_info("app", "dev")
    assert info is not None
    password, user, psk = info.credentials
    assert isinstance(password, PasswordCredential)
    assert isinstance(user, UserCredential)
    assert password.hash != "first-password"
    assert password.hash.startswith("$argon2id$")
    assert passwords.verify_password(password.hash, "first-password")
    assert user.username == "meter-7"
    assert user.unique
    assert passwords.verify_password(user.hash, "second-password")
    assert psk == PskCredential(b"\x00\x01\x02\x03")
    assert info.aliases == ("urn:x",)
    assert info.gateways == ("gw",)
    assert info.ttn == {"payload": "raw"}

    assert await store.find_device_by_username("app", "meter-7") == info
    assert await store.find_device_by_alias("app", "urn:x") == info
    assert await store.find_device_by_username("app", "nobody") is None
    assert await store.find_device_by_alias("app", "urn:y") is None
    assert await store.get_device_info("app", "ghost") is None

    # Sending the redacted document back keeps every stored secret.
    read = await store.get_device("app", "dev")
    await store.update_device("app", DeviceDocument.model_validate(read.dump()))
    again = await store.get_device_info("app", "dev")
    assert again is not None
    assert again.credentials == info.credentials

    # A document without credentials keeps them too; one with credentials replaces them.
    await store.update_device("app", dev_doc("dev", {"alias": ["urn:z"]}))
    kept = await store.get_device_info("app", "dev")
    assert kept is not None
    assert kept.credentials == info.credentials
    assert kept.aliases == ("urn:z",)
    assert await store.find_device_by_alias("app", "urn:x") is None
    assert await store.find_device_by_alias("app", "urn:z") is not None
    await store.update_device("app", dev_doc("dev", {"authentication": {"credentials": [{"pass": "new"}]}}))
    replaced = await store.get_device_info("app", "dev")
    assert replaced is not None
    assert len(replaced.credentials) == 1
    assert isinstance(replaced.credentials[0], PasswordCredential)
    assert passwords.verify_password(replaced.credentials[0].hash, "new")
    assert await store.find_device_by_username("app", "meter-7") is None

    # A redacted entry that matches nothing stored is refused.
    with pytest.raises(BadRequest):
        await store.update_device("app", dev_doc(
            "dev", {"authentication": {"credentials": [{"psk": {"key": {"redacted": True}}}]}}))


async def test_imported_bcrypt_hash_kept_as_is(store: RegistryStore) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    await store.create_application(app_doc("app"))
    await store.create_device("app", dev_doc("d", {"authentication": {"credentials": [{"pass": {"bcrypt": hashed}}]}}))
    info = await store.get_device_info("app", "d")
    assert info is not None
    assert info.credentials == (PasswordCredential(hashed),)


async def test_unique_usernames_and_aliases_collide(store: RegistryStore) -> None:
    await store.create_application(app_doc("app"))
    unique = {"authentication": {"credentials": [{"user": {"username": "u", "password": "p", "unique": True}}]},
              "alias": ["al"]}
    await store.create_device("app", dev_doc("d1", unique))
    with pytest.raises(AlreadyExists):
        await store.create_device("app", dev_doc("d2", unique))
    with pytest.raises(AlreadyExists):
        await store.create_device("app", dev_doc("d3", {"alias": ["al"]}))
    assert await store.get_device_info("app", "d2") is None
    # Non-unique usernames may repeat; the lookup prefers the unique holder.
    shared = {"authentication": {"credentials": [{"user": {"username": "u", "password": "p"}}]}}
    await store.create_device("app", dev_doc("a0", shared))
    found = await store.find_device_by_username("app", "u")
    assert found is not None
    assert found.name == "d1"
    # The same unique username in another application is fine.
    await store.create_application(app_doc("other"))
    await store.create_device("other", dev_doc("d1", unique))


async def test_delete_cascades_and_listeners(store: RegistryStore) -> None:
    changes: list[RegistryChange] = []
    store.add_change_listener(changes.append)
    await store.create_application(app_doc("app"), creator="bob")
    spec = {"alias": ["al"], "authentication": {"credentials": [{"user": {"username": "u", "password": "p"}}]}}
    created = await store.create_device("app", dev_doc("dev", spec))
    await store.update_device("app", dev_doc("dev", {"core": {"disabled": True}}))
    disabled = await store.get_device_info("app", "dev")
    assert disabled is not None
    assert disabled.disabled
    with pytest.raises(StaleResourceVersion):
        await store.delete_device("app", "dev", resource_version=created.metadata.resource_version)
    await store.delete_application("app")
    assert await store.get_device_info("app", "dev") is None
    assert await store.member_role("app", "bob") is None
    # Recreating the application starts clean: no device, alias or credential survived.
    await store.create_application(app_doc("app"))
    assert await store.list_devices("app") == []
    assert await store.find_device_by_alias("app", "al") is None
    assert await store.find_device_by_username("app", "u") is None
    assert changes[:4] == [
        RegistryChange("application", "app"),
        RegistryChange("device", "app", "dev"),
        RegistryChange("device", "app", "dev"),
        RegistryChange("application", "app"),
    ]
    store.remove_change_listener(changes.append)
    await store.delete_application("app")
    assert len(changes) == 5


async def test_members(store: RegistryStore) -> None:
    created = await store.create_application(app_doc("app"), creator="alice")
    version, members = await store.get_members("app")
    assert version == created.metadata.resource_version
    assert members == {"alice": Role.ADMIN}
    new_version = await store.set_members("app", {"alice": Role.ADMIN, "bob": Role.READER}, resource_version=version)
    assert await store.member_role("app", "bob") is Role.READER
    with pytest.raises(StaleResourceVersion):
        await store.set_members("app", {}, resource_version=version)
    assert (await store.get_members("app"))[0] == new_version


async def test_sqlite_file_created_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "registry.db"
    opened = await RegistryStore.open(f"sqlite+aiosqlite:///{path}")
    try:
        await opened.create_application(app_doc("x"))
    finally:
        await opened.aclose()
    reopened = await RegistryStore.open(f"sqlite+aiosqlite:///{path}")
    try:
        assert (await reopened.get_application("x")).metadata.name == "x"
    finally:
        await reopened.aclose()
