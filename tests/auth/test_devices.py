"""Device authentication against an in-memory directory: outcomes, errors, the verified-credential
cache (hits, age, invalidation, single flight) and gateway resolution."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from auth.devices import DeviceAuthenticator, DeviceCredentials
from hawser import passwords
from hawser.errors import (
    ApplicationDisabled,
    BadCredentials,
    DeviceDisabled,
    GatewayNotAllowed,
    HawserError,
    Overloaded,
)
from hawser.passwords import verify_password
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
async def test_refusals_are_indistinguishable(authn: DeviceAuthenticator, credentials: DeviceCredentials) -> None:
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


async def test_change_of_another_device_keeps_entry(directory: MemoryDirectory, authn: DeviceAuthenticator) -> None:
    credentials = DeviceCredentials("app1", "dev1", "secret1")
    await authn.authenticate(credentials)
    directory.update_device("app1", "lonely", disabled=True)
    directory.update_app("app2", disabled=True)
    await authn.authenticate(credentials)
    assert authn.kdf_runs == 1


async def test_application_change_drops_all_its_entries(directory: MemoryDirectory, authn: DeviceAuthenticator) -> None:
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


async def test_as_own_alias_needs_no_gateway(authn: DeviceAuthenticator) -> None:
    outcome = await authn.authenticate(DeviceCredentials("app1", "behind", "behindpw"), "behind-alias")
    assert outcome.target.name == outcome.device.name == "behind"


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


class HeldCheck:
    """A password check that holds every verification until released (a thread-side gate), so a
    test can keep the verifier busy without timing; bounded by a deadline."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, hashed: str, secret: str) -> bool:
        if not self.gate.wait(10):
            raise TimeoutError("never released")
        return verify_password(hashed, secret)


async def until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0)


async def test_unknown_names_run_one_dummy_verification(directory: MemoryDirectory, authn: DeviceAuthenticator) -> None:
    # Wrong password: one real KDF run; unknown device, unknown application, unknown device of a
    # device= login: one dummy run each, so all cost the same.
    for credentials in (
        DeviceCredentials("app1", "dev1", "wrong"),
        DeviceCredentials("app1", "ghost", "wrong"),
        DeviceCredentials("nowhere", "dev1", "secret1"),
        DeviceCredentials("app1", "alice", "x", device="ghost"),
        DeviceCredentials("app1", "gw", "x", device="dev1"),  # dev1 has no user credential "gw"
    ):
        before = authn.kdf_runs
        with pytest.raises(BadCredentials):
            await authn.authenticate(credentials)
        assert authn.kdf_runs == before + 1, credentials


async def test_dummy_verification_uses_the_configured_cost() -> None:
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=1024, parallelism=1))
    try:
        assert passwords.dummy_hash().startswith("$argon2id$v=19$m=1024,t=1,p=1$")
        assert not passwords.dummy_verify("anything")
    finally:
        passwords.configure(passwords.KdfCost())
    assert passwords.dummy_hash().startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_login_by_alias_and_by_named_device(directory: MemoryDirectory, authn: DeviceAuthenticator) -> None:
    assert (await authn.authenticate(DeviceCredentials("app1", "behind-alias", "behindpw"))).device.name == "behind"
    directory.add_device("app1", "other", user("alice", "otherpw", unique=False))
    named = DeviceCredentials("app1", "alice", "otherpw", device="other")
    assert (await authn.authenticate(named)).device.name == "other"
    with pytest.raises(BadCredentials):  # not unique: only with its device
        await authn.authenticate(DeviceCredentials("app1", "alice", "otherpw"))


async def test_flood_of_verifications_is_refused_while_cache_hits_pass(directory: MemoryDirectory) -> None:
    check = HeldCheck()
    verifier = passwords.PasswordVerifier(workers=1, max_waiting=2, check=check)
    authn = DeviceAuthenticator(directory, cache_size=100, cache_ttl_s=60.0, verifier=verifier)
    try:
        good = DeviceCredentials("app1", "dev1", "secret1")
        await authn.authenticate(good)  # cached from now on
        check.gate.clear()
        guesses = [
            asyncio.create_task(authn.authenticate(DeviceCredentials("app1", "dev1", f"no{i}"))) for i in range(3)
        ]
        await until(lambda: verifier.waiting == 2)  # one runs, two wait
        with pytest.raises(Overloaded) as caught:
            await authn.authenticate(DeviceCredentials("app1", "dev1", "one-too-many"))
        assert (caught.value.retriable, caught.value.retry_after) == (True, 1)
        assert (await authn.authenticate(good)).device.name == "dev1"  # a cache hit never waits
        check.gate.set()
        results = await asyncio.gather(*guesses, return_exceptions=True)
        assert all(isinstance(r, BadCredentials) for r in results)
        assert verifier.waiting == 0
    finally:
        check.gate.set()
        await authn.aclose()
        verifier.close()


async def test_request_after_a_password_change_does_not_join_an_older_verification(
    directory: MemoryDirectory,
) -> None:
    check = HeldCheck()
    verifier = passwords.PasswordVerifier(workers=2, check=check)
    authn = DeviceAuthenticator(directory, cache_size=100, cache_ttl_s=60.0, verifier=verifier)
    try:
        old = DeviceCredentials("app1", "dev1", "secret1")
        check.gate.clear()
        before = asyncio.create_task(authn.authenticate(old))
        await until(lambda: authn.kdf_runs == 1)  # it has read the old hash and is verifying it
        directory.update_device("app1", "dev1", credentials=(password("changed"),))
        after = asyncio.create_task(authn.authenticate(old))
        await until(lambda: authn.kdf_runs == 2)  # its own verification, of the new hash
        check.gate.set()
        assert (await before).device.name == "dev1"  # started before the change: answered
        with pytest.raises(BadCredentials):
            await after
        with pytest.raises(BadCredentials):  # and the old answer was not cached
            await authn.authenticate(old)
    finally:
        check.gate.set()
        await authn.aclose()
        verifier.close()


async def test_outcomes_are_cached_with_their_event_template(authn: DeviceAuthenticator) -> None:
    credentials = DeviceCredentials("app1", "gw", "gwpw")
    first, second = [await authn.authenticate(credentials) for _ in range(2)]
    assert first is second
    assert first.event_template("i") is second.event_template("i")
    via = [await authn.authenticate(credentials, "behind") for _ in range(2)]
    assert via[0] is via[1]
    template = via[0].event_template("i")
    assert template.source == "drogue://app1/behind"
    assert dict(template.extensions) == {
        "application": "app1",
        "applicationuid": "uid-app1",
        "device": "behind",
        "deviceuid": "uid-app1-behind",
        "sender": "gw",
        "senderuid": "uid-app1-gw",
        "instance": "i",
        "partitionkey": "app1/behind",
    }
