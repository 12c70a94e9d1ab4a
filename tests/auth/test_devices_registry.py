"""Device authentication against the real registry store (SQLite always, PostgreSQL with the
session server): credential forms, gateways by name and alias, invalidation by real changes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from auth.devices import DeviceAuthenticator, DeviceCredentials
from endpoints.uplink import parse_basic_auth
from hawser import passwords
from hawser.errors import ApplicationDisabled, BadCredentials, GatewayNotAllowed
from registry.documents import ApplicationDocument, DeviceDocument
from registry.store import RegistryStore

# SHA-512 crypt as Drogue devices may carry it: a vector of Drepper's spec, "This is just a test".
SHA512_HASH = (
    "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3"
    "y6JMxxl8audkUEm0"
)


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def device_doc(name: str, *credentials: dict[str, Any], **spec: Any) -> DeviceDocument:
    return DeviceDocument.model_validate(
        {
            "metadata": {"name": name, "application": "app1"},
            "spec": {"authentication": {"credentials": list(credentials)}, **spec},
        }
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RegistryStore]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=1024, parallelism=1))
    store = await RegistryStore.open(url)
    try:
        await store.create_application(ApplicationDocument.model_validate({"metadata": {"name": "app1"}}))
        imported = bcrypt.hashpw(b"legacy", bcrypt.gensalt(rounds=4)).decode()
        for doc in (
            device_doc("dev1", {"pass": "pw1"}, alias=["dev1-alias"]),
            device_doc("sensor", {"user": {"username": "alice", "password": "alicepw", "unique": True}}),
            device_doc("old", {"pass": {"bcrypt": imported}}),
            device_doc("drogue", {"user": {"username": "carol", "password": {"sha512": SHA512_HASH}}}),
            device_doc("gw", {"pass": "gwpw"}),
            device_doc("behind", alias=["behind-alias"], gatewaySelector={"matchNames": ["gw"]}),
            device_doc("a-dev", {"user": {"username": "shared", "password": "pwA", "unique": False}}),
            device_doc("b-dev", {"user": {"username": "shared", "password": "pwB", "unique": False}}),
        ):
            await store.create_device("app1", doc)
        yield store
    finally:
        await store.aclose()
        passwords.configure(passwords.KdfCost())


@pytest.fixture
def authn(store: RegistryStore) -> DeviceAuthenticator:
    return DeviceAuthenticator(store, cache_size=100, cache_ttl_s=60.0)


@pytest.mark.parametrize(
    ("user", "secret", "named", "device"),
    [
        ("dev1", "pw1", None, "dev1"),
        ("alice", "alicepw", None, "sensor"),
        ("old", "legacy", None, "old"),
        ("carol", "This is just a test", "drogue", "drogue"),
        ("alice", "alicepw", "sensor", "sensor"),
        ("dev1-alias", "pw1", None, "dev1"),
        ("shared", "pwB", "b-dev", "b-dev"),
        ("shared", "pwA", "a-dev", "a-dev"),
        ("dev1", "pw1", "dev1", "dev1"),
    ],
)
async def test_credential_forms(
    authn: DeviceAuthenticator, user: str, secret: str, named: str | None, device: str
) -> None:
    outcome = await authn.authenticate(DeviceCredentials("app1", user, secret, device=named))
    assert outcome.device.name == device
    assert outcome.application.uid
    with pytest.raises(BadCredentials):
        await authn.authenticate(DeviceCredentials("app1", user, secret + "x", device=named))


@pytest.mark.parametrize(
    ("user", "secret", "named"),
    [
        ("carol", "This is just a test", None),  # a username that is not unique needs the device
        ("shared", "pwB", None),
        ("shared", "pwA", "b-dev"),
        ("alice", "alicepw", "dev1"),
        ("x", "pw1", "dev1"),
    ],
)
async def test_non_unique_usernames_need_their_device(
    authn: DeviceAuthenticator, user: str, secret: str, named: str | None
) -> None:
    with pytest.raises(BadCredentials):
        await authn.authenticate(DeviceCredentials("app1", user, secret, device=named))


@pytest.mark.parametrize("user", ["d\x00", "ap\x00p1", "\x00"])
async def test_names_with_nul_are_refused_before_the_database(authn: DeviceAuthenticator, user: str) -> None:
    # On PostgreSQL a NUL in a query parameter crashes asyncpg; the parser refuses it first.
    for header in (basic(f"{user}@app1:pw"), basic(f"dev1@{user}:pw"), basic(f"{user}%00@app1:pw")):
        with pytest.raises(BadCredentials):
            await authn.authenticate(parse_basic_auth(header))
    assert authn.kdf_runs == 0


async def test_unknown_names_cost_one_dummy_verification(authn: DeviceAuthenticator) -> None:
    for credentials in (
        DeviceCredentials("app1", "ghost", "pw"),
        DeviceCredentials("nowhere", "dev1", "pw1"),
        DeviceCredentials("app1", "ghost", "pw", device="ghost"),
    ):
        before = authn.kdf_runs
        with pytest.raises(BadCredentials):
            await authn.authenticate(credentials)
        assert authn.kdf_runs == before + 1


async def test_gateway_by_name_and_alias(authn: DeviceAuthenticator) -> None:
    gw = DeviceCredentials("app1", "gw", "gwpw")
    assert (await authn.authenticate(gw, "behind")).target.name == "behind"
    assert (await authn.authenticate(gw, "behind-alias")).target.name == "behind"
    with pytest.raises(GatewayNotAllowed):
        await authn.authenticate(DeviceCredentials("app1", "dev1", "pw1"), "behind")


async def test_changes_invalidate(store: RegistryStore, authn: DeviceAuthenticator) -> None:
    credentials = DeviceCredentials("app1", "dev1", "pw1")
    await authn.authenticate(credentials)
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 1

    current = await store.get_device("app1", "dev1")
    changed = device_doc("dev1", {"pass": "pw2"})
    changed.metadata.resource_version = current.metadata.resource_version
    await store.update_device("app1", changed)
    with pytest.raises(BadCredentials):
        await authn.authenticate(credentials)
    new = DeviceCredentials("app1", "dev1", "pw2")
    await authn.authenticate(new)

    app = await store.get_application("app1")
    await store.update_application(
        ApplicationDocument.model_validate({**app.model_dump(by_alias=True), "spec": {"core": {"disabled": True}}})
    )
    with pytest.raises(ApplicationDisabled):
        await authn.authenticate(new)

    await store.delete_device("app1", "dev1")
    with pytest.raises(BadCredentials):
        await authn.authenticate(new)


async def test_gateway_selector_change_invalidates(store: RegistryStore, authn: DeviceAuthenticator) -> None:
    gw = DeviceCredentials("app1", "gw", "gwpw")
    await authn.authenticate(gw, "behind")
    current = await store.get_device("app1", "behind")
    changed = device_doc("behind")
    changed.metadata.resource_version = current.metadata.resource_version
    await store.update_device("app1", changed)
    with pytest.raises(GatewayNotAllowed):
        await authn.authenticate(gw, "behind")
