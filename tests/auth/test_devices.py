"""Device authentication against an in-memory directory: outcomes, errors, the verified-credential
cache (hits, age, invalidation, single flight) and gateway resolution."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from auth.devices import DeviceAuthenticator, DeviceCredentials
from hawser.errors import (
    ApplicationDisabled,
    BadCredentials,
    DeviceDisabled,
    GatewayNotAllowed,
    HawserError,
)
from registry.values import DeviceInfo
from tests.auth.fakes import MemoryDirectory, password, user


def cache_lookups(result: str) -> float:
    return REGISTRY.get_sample_value("hawser_device_auth_cache_total", {"result": result}) or 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def directory() -> MemoryDirectory:
    d = MemoryDirectory()
    d.add_app("app1")
    d.add_app("app2")
    d.add_device("app1", "dev1", password("secret1"))
    d.add_device("app1", "dev@x", password("secret-at"))
    d.add_device("app1", "sensor", user("alice", "alicepw"))
    d.add_device("app1", "gw", password("gwpw"))
    d.add_device("app1", "behind", password("behindpw"), gateways=("gw",), aliases=("behind-alias",))
    d.add_device("app1", "lonely", password("lonelypw"))
    d.add_device("app2", "dev1", password("other"))
    return d


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authn(directory: MemoryDirectory, clock: Clock) -> DeviceAuthenticator:
    return DeviceAuthenticator(directory, cache_size=100, cache_ttl_s=60.0, clock=clock)


async def test_device_password(authn: DeviceAuthenticator) -> None:
    outcome = await authn.authenticate(DeviceCredentials("app1", "dev1", "secret1"))
    assert (outcome.application.name, outcome.application.uid) == ("app1", "uid-app1")
    assert outcome.device.name == "dev1"
    assert outcome.target is outcome.device


async def test_device_name_with_at(authn: DeviceAuthenticator) -> None:
    outcome = await authn.authenticate(DeviceCredentials("app1", "dev@x", "secret-at"))
    assert outcome.device.name == "dev@x"


async def test_username_credential(authn: DeviceAuthenticator) -> None:
    outcome = await authn.authenticate(DeviceCredentials("app1", "alice", "alicepw"))
    assert outcome.device.name == "sensor"


async def test_same_application_scope(authn: DeviceAuthenticator) -> None:
    assert (await authn.authenticate(DeviceCredentials("app2", "dev1", "other"))).device.uid == "uid-app2-dev1"
    with pytest.raises(BadCredentials):
        await authn.authenticate(DeviceCredentials("app2", "dev1", "secret1"))


@pytest.mark.parametrize(
    "credentials",
    [
        DeviceCredentials("app1", "dev1", "wrong"),
        DeviceCredentials("app1", "dev1", ""),
        DeviceCredentials("app1", "nobody", "secret1"),
        DeviceCredentials("nowhere", "dev1", "secret1"),
        DeviceCredentials("app1", "sensor", "alicepw"),  # a user credential is not the device's own
        DeviceCredentials("app1", "alice", "secret1"),
    ],
)
async def test_refusals_are_indistinguishable(
    authn: DeviceAuthenticator, credentials: DeviceCredentials
) -> None:
    with pytest.raises(BadCredentials) as caught:
        await authn.authenticate(credentials)
    assert type(caught.value) is BadCredentials
    assert caught.value.detail == BadCredentials().detail


async def test_disabled_device_and_application(directory: MemoryDirectory, authn: DeviceAuthenticator) -> None:
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    directory.update_device("app1", "dev1", disabled=True)
    with pytest.raises(DeviceDisabled):
        await authn.authenticate(credentials)
    directory.update_device("app1", "dev1", disabled=False)
    directory.update_app("app1", disabled=True)
    with pytest.raises(ApplicationDisabled):
        await authn.authenticate(credentials)
    directory.update_app("app1", disabled=False)
    assert (await authn.authenticate(credentials)).device.name == "dev1"


async def test_disabled_device_with_wrong_password_is_bad_credentials(
    directory: MemoryDirectory, authn: DeviceAuthenticator
) -> None:
    directory.update_device("app1", "dev1", disabled=True)
    with pytest.raises(BadCredentials):
        await authn.authenticate(DeviceCredentials("app1", "dev1", "wrong"))


# --- the cache ---------------------------------------------------------------------------------------


async def test_second_authentication_costs_no_kdf_and_no_query(
    directory: MemoryDirectory, authn: DeviceAuthenticator
) -> None:
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    misses, hits = cache_lookups("miss"), cache_lookups("hit")
    await authn.authenticate(credentials)
    runs, queries = authn.kdf_runs, sum(directory.queries.values())
    assert runs == 1
    for _ in range(5):
        await authn.authenticate(credentials)
    assert (authn.kdf_runs, sum(directory.queries.values())) == (runs, queries)
    assert (cache_lookups("miss"), cache_lookups("hit")) == (misses + 1, hits + 5)


async def test_failures_are_not_cached(authn: DeviceAuthenticator) -> None:
    for expected_runs in (1, 2):
        with pytest.raises(BadCredentials):
            await authn.authenticate(DeviceCredentials("app1", "dev1", "wrong"))
        assert authn.kdf_runs == expected_runs


async def test_different_password_is_a_different_entry(authn: DeviceAuthenticator) -> None:
    await authn.authenticate(DeviceCredentials("app1", "dev1", "secret1"))
    with pytest.raises(BadCredentials):
        await authn.authenticate(DeviceCredentials("app1", "dev1", "secret2"))
    assert authn.kdf_runs == 2


async def test_entries_expire(authn: DeviceAuthenticator, clock: Clock) -> None:
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    await authn.authenticate(credentials)
    clock.now += 59.0
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 1
    clock.now += 2.0
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 2


async def test_password_change_invalidates(directory: MemoryDirectory, authn: DeviceAuthenticator) -> None:
    old = DeviceCredentials("app1", "dev1", "secret1")
    await authn.authenticate(old)
    directory.update_device("app1", "dev1", credentials=(password("new-secret"),))
    with pytest.raises(BadCredentials):
        await authn.authenticate(old)
    assert (await authn.authenticate(DeviceCredentials("app1", "dev1", "new-secret"))).device.name == "dev1"


async def test_change_of_another_device_keeps_entry(
    directory: MemoryDirectory, authn: DeviceAuthenticator
) -> None:
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    await authn.authenticate(credentials)
    directory.update_device("app1", "lonely", disabled=True)
    directory.update_app("app2", disabled=True)
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 1


async def test_application_change_drops_all_its_entries(
    directory: MemoryDirectory, authn: DeviceAuthenticator
) -> None:
    await authn.authenticate(DeviceCredentials("app1", "dev1", "secret1"))
    await authn.authenticate(DeviceCredentials("app1", "alice", "alicepw"))
    directory.update_app("app1", resource_version="2")
    await authn.authenticate(DeviceCredentials("app1", "dev1", "secret1"))
    await authn.authenticate(DeviceCredentials("app1", "alice", "alicepw"))
    assert authn.kdf_runs == 4


async def test_concurrent_first_requests_share_one_kdf_run(authn: DeviceAuthenticator) -> None:
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    outcomes = await asyncio.gather(*(authn.authenticate(credentials) for _ in range(20)))
    assert {o.device.name for o in outcomes} == {"dev1"}
    assert authn.kdf_runs == 1


async def test_concurrent_failures_all_fail(authn: DeviceAuthenticator) -> None:
    credentials = DeviceCredentials("app1", "dev1", "wrong")
    results = await asyncio.gather(*(authn.authenticate(credentials) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, BadCredentials) for r in results)
    assert authn.kdf_runs == 1


async def test_one_waiter_cancelled_does_not_cancel_the_others() -> None:
    directory = GatedDirectory()
    directory.add_app("app1")
    directory.add_device("app1", "dev1", password("secret1"))
    authn = DeviceAuthenticator(directory, cache_size=10, cache_ttl_s=60.0)
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    first = asyncio.create_task(authn.authenticate(credentials))
    second = asyncio.create_task(authn.authenticate(credentials))
    await directory.entered.wait()  # both callers wait on the one shared verification now
    first.cancel()
    directory.release.set()
    assert (await second).device.name == "dev1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert authn.kdf_runs == 1


class GatedDirectory(MemoryDirectory):
    """Holds `get_device_info` until released, so a change can land mid-verification."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def get_device_info(self, application: str, device: str) -> DeviceInfo | None:
        self.entered.set()
        await self.release.wait()
        return await super().get_device_info(application, device)


async def test_change_during_verification_is_not_cached() -> None:
    directory = GatedDirectory()
    directory.add_app("app1")
    directory.add_device("app1", "dev1", password("secret1"))
    authn = DeviceAuthenticator(directory, cache_size=10, cache_ttl_s=60.0)
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    pending = asyncio.create_task(authn.authenticate(credentials))
    await directory.entered.wait()
    directory.update_device("app1", "dev1", resource_version="2")
    directory.release.set()
    await pending
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 2
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 2


async def test_cache_keys_hold_no_clear_password(authn: DeviceAuthenticator) -> None:
    await authn.authenticate(DeviceCredentials("app1", "dev1", "secret1"))
    keys = list(authn._verified._entries)
    assert len(keys) == 1
    assert len(keys[0]) == 32
    assert b"secret1" not in keys[0]


async def test_cache_disabled_still_authenticates(directory: MemoryDirectory) -> None:
    authn = DeviceAuthenticator(directory, cache_size=0, cache_ttl_s=60.0)
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    await authn.authenticate(credentials)
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 2


# --- gateways -----------------------------------------------------------------------------------------


async def test_gateway_publishes_for_listed_device(authn: DeviceAuthenticator) -> None:
    outcome = await authn.authenticate(DeviceCredentials("app1", "gw", "gwpw"), "behind")
    assert (outcome.device.name, outcome.target.name) == ("gw", "behind")
    by_alias = await authn.authenticate(DeviceCredentials("app1", "gw", "gwpw"), "behind-alias")
    assert by_alias.target.name == "behind"


async def test_as_self_needs_no_gateway(authn: DeviceAuthenticator) -> None:
    outcome = await authn.authenticate(DeviceCredentials("app1", "lonely", "lonelypw"), "lonely")
    assert outcome.target is outcome.device


@pytest.mark.parametrize(
    ("who", "secret", "as_device", "error"),
    [
        ("lonely", "lonelypw", "behind", GatewayNotAllowed),  # not listed as a gateway
        ("gw", "gwpw", "lonely", GatewayNotAllowed),  # target lists no gateways
        ("gw", "gwpw", "ghost", GatewayNotAllowed),  # target unknown: answered alike
        ("gw", "wrong", "behind", BadCredentials),
    ],
)
async def test_gateway_refusals(
    authn: DeviceAuthenticator, who: str, secret: str, as_device: str, error: type[HawserError]
) -> None:
    with pytest.raises(error) as caught:
        await authn.authenticate(DeviceCredentials("app1", who, secret), as_device)
    assert type(caught.value) is error


async def test_disabled_target(directory: MemoryDirectory, authn: DeviceAuthenticator) -> None:
    directory.update_device("app1", "behind", disabled=True)
    with pytest.raises(DeviceDisabled):
        await authn.authenticate(DeviceCredentials("app1", "gw", "gwpw"), "behind")


async def test_gateway_resolution_is_cached_and_invalidated(
    directory: MemoryDirectory, authn: DeviceAuthenticator
) -> None:
    gw = DeviceCredentials("app1", "gw", "gwpw")
    await authn.authenticate(gw, "behind")
    with pytest.raises(GatewayNotAllowed):
        await authn.authenticate(gw, "ghost")
    queries = sum(directory.queries.values())
    await authn.authenticate(gw, "behind")
    with pytest.raises(GatewayNotAllowed):
        await authn.authenticate(gw, "ghost")
    assert sum(directory.queries.values()) == queries
    directory.add_device("app1", "ghost", password("x"), gateways=("gw",))
    assert (await authn.authenticate(gw, "ghost")).target.name == "ghost"
    directory.update_device("app1", "behind", gateways=())
    with pytest.raises(GatewayNotAllowed):
        await authn.authenticate(gw, "behind")


async def test_aclose_cancels_pending_verification() -> None:
    directory = GatedDirectory()
    directory.add_app("app1")
    authn = DeviceAuthenticator(directory, cache_size=10, cache_ttl_s=60.0)
    pending = asyncio.create_task(authn.authenticate(DeviceCredentials("app1", "x", "y")))
    await directory.entered.wait()
    await authn.aclose()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert not authn._inflight
