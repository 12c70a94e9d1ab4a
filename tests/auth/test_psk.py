"""Pre-shared keys for DTLS against an in-memory directory: identities, the bounded cache with a
maximum age that tinydtls reads synchronously, shared and bounded prefetches, and invalidation."""

from __future__ import annotations

import asyncio

import pytest

from auth.psk import MAX_KEY_BYTES, PskIdentity, PskKey, PskKeys, parse_identity
from hawser.errors import Overloaded
from registry.values import ApplicationInfo, DeviceInfo, PskCredential
from tests.auth.fakes import MemoryDirectory, password

KEY = b"secret-key-0123"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def directory() -> MemoryDirectory:
    directory = MemoryDirectory()
    directory.add_app("app")
    directory.add_device("app", "dev", PskCredential(KEY))
    return directory


def keys_for(directory: MemoryDirectory, **kwargs: object) -> PskKeys:
    options: dict[str, object] = {"cache_size": 100, "cache_ttl_s": 60.0, **kwargs}
    return PskKeys(directory, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (b"dev@app", PskIdentity("app", "dev")),
        (b"d@v@app", PskIdentity("app", "d@v")),  # the LAST @ splits, as endpoints.uplink
        (b"d%40v@app", PskIdentity("app", "d@v")),  # percent-decoded device, as Drogue
        (b"d%ffv@app", PskIdentity("app", "d%ffv")),  # not UTF-8 once decoded: kept as given
        (b"x" * 28 + b"@app", PskIdentity("app", "x" * 28)),  # 32 bytes: tinydtls's limit
        (b"x" * 29 + b"@app", None),
        (b"devapp", None),
        (b"@app", None),
        (b"dev@", None),
        (b"", None),
        (b"d\x00v@app", None),
        (b"dev@a\x1bp", None),
        (b"\xff\xfe@app", None),
    ],
)
def test_identity_names_a_device_or_nothing(identity: bytes, expected: PskIdentity | None) -> None:
    assert parse_identity(identity) == expected


async def test_prefetch_reads_the_key_once_and_tinydtls_finds_it(directory: MemoryDirectory) -> None:
    keys = keys_for(directory)
    with pytest.raises(KeyError):
        keys.find_dtls_psk(b"dev@app")
    assert not keys.known(b"dev@app")
    found = await keys.prefetch(b"dev@app")
    assert found == PskKey(KEY, PskIdentity("app", "dev"))
    assert KEY not in repr(found).encode()
    assert keys.known(b"dev@app")
    assert keys.find_dtls_psk(b"dev@app") == (KEY, PskIdentity("app", "dev"))
    assert await keys.prefetch(b"dev@app") == found
    assert keys.lookups == 1
    assert directory.queries["device"] == 1


@pytest.mark.parametrize(
    "identity", [b"nobody@app", b"dev@nowhere", b"plain@app"], ids=["no-device", "no-app", "no-psk"]
)
async def test_no_key_is_cached_too(directory: MemoryDirectory, identity: bytes) -> None:
    directory.add_device("app", "plain", password("pw"))
    keys = keys_for(directory)
    assert await keys.prefetch(identity) is None
    assert keys.known(identity)
    with pytest.raises(KeyError):
        keys.find_dtls_psk(identity)
    assert await keys.prefetch(identity) is None
    assert keys.lookups == 1


async def test_an_identity_naming_no_device_is_never_looked_up(directory: MemoryDirectory) -> None:
    keys = keys_for(directory)
    assert keys.known(b"no-at-sign")
    assert await keys.prefetch(b"no-at-sign") is None
    assert keys.lookups == 0
    assert sum(directory.queries.values()) == 0


async def test_disabled_devices_and_applications_keep_their_key(directory: MemoryDirectory) -> None:
    """Refused per request (4.03 with a reason), not at the handshake (a bare alert)."""
    directory.add_device("app", "off", PskCredential(KEY), disabled=True)
    directory.add_app("offapp", disabled=True)
    directory.add_device("offapp", "dev", PskCredential(KEY))
    keys = keys_for(directory)
    assert await keys.prefetch(b"off@app") == PskKey(KEY, PskIdentity("app", "off"))
    assert await keys.prefetch(b"dev@offapp") == PskKey(KEY, PskIdentity("offapp", "dev"))


async def test_keys_tinydtls_cannot_hold_are_skipped(
    directory: MemoryDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    long_key = b"k" * (MAX_KEY_BYTES + 1)
    directory.add_device("app", "long", PskCredential(long_key))
    directory.add_device("app", "both", PskCredential(long_key), PskCredential(b"short"), PskCredential(b"other"))
    keys = keys_for(directory)
    assert await keys.prefetch(b"long@app") is None
    # The first usable one: tinydtls asks for exactly one key per identity.
    assert await keys.prefetch(b"both@app") == PskKey(b"short", PskIdentity("app", "both"))
    assert "longer than 16 bytes" in caplog.text
    assert long_key.decode() not in caplog.text


async def test_concurrent_handshakes_share_one_lookup(directory: MemoryDirectory) -> None:
    keys = keys_for(directory)
    results = await asyncio.gather(*(keys.prefetch(b"dev@app") for _ in range(10)))
    assert all(r == PskKey(KEY, PskIdentity("app", "dev")) for r in results)
    assert keys.lookups == 1


async def test_lookups_beyond_the_bound_are_refused(directory: MemoryDirectory) -> None:
    gate = asyncio.Event()
    original = directory.get_application_info

    async def slow(application: str) -> ApplicationInfo | None:
        await gate.wait()
        return await original(application)

    directory.get_application_info = slow  # type: ignore[method-assign]
    keys = keys_for(directory, max_pending=2)
    first = asyncio.ensure_future(keys.prefetch(b"a@app"))
    second = asyncio.ensure_future(keys.prefetch(b"b@app"))
    joined = asyncio.ensure_future(keys.prefetch(b"a@app"))  # joins a running lookup: not refused
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await keys.prefetch(b"c@app")
    gate.set()
    assert list(await asyncio.gather(first, second, joined)) == [None, None, None]
    assert await keys.prefetch(b"c@app") is None  # room again
    assert keys.lookups == 3


async def test_entries_expire(directory: MemoryDirectory) -> None:
    clock = Clock()
    keys = keys_for(directory, cache_ttl_s=10.0, clock=clock)
    await keys.prefetch(b"dev@app")
    clock.now = 9.9
    assert keys.known(b"dev@app")
    clock.now = 10.0
    assert not keys.known(b"dev@app")
    with pytest.raises(KeyError):
        keys.find_dtls_psk(b"dev@app")
    await keys.prefetch(b"dev@app")
    assert keys.lookups == 2


async def test_the_cache_is_bounded(directory: MemoryDirectory) -> None:
    keys = keys_for(directory, cache_size=3)
    for n in range(10):
        await keys.prefetch(f"d{n}@app".encode())
    assert sum(keys.known(f"d{n}@app".encode()) for n in range(10)) == 3
    assert keys.known(b"d9@app")
    assert not keys.known(b"d0@app")


async def test_without_a_cache_every_prefetch_reads_the_registry(directory: MemoryDirectory) -> None:
    keys = keys_for(directory, cache_size=0)
    assert await keys.prefetch(b"dev@app") == PskKey(KEY, PskIdentity("app", "dev"))
    assert await keys.prefetch(b"dev@app") is not None
    assert keys.lookups == 2
    assert not keys.known(b"dev@app")


async def test_a_registry_change_drops_its_entries_and_tells_the_watchers(directory: MemoryDirectory) -> None:
    directory.add_device("app", "other", PskCredential(b"other"))
    directory.add_app("app2")
    directory.add_device("app2", "dev", PskCredential(b"two"))
    keys = keys_for(directory)
    seen: list[tuple[str, str | None]] = []
    stop = keys.watch(lambda app, device: seen.append((app, device)))
    for identity in (b"dev@app", b"other@app", b"dev@app2", b"new@app"):
        await keys.prefetch(identity)

    directory.update_device("app", "dev", credentials=(PskCredential(b"rotated"),))
    assert seen == [("app", "dev")]
    assert not keys.known(b"dev@app")
    assert keys.known(b"other@app")
    assert keys.known(b"dev@app2")
    assert (await keys.prefetch(b"dev@app")) == PskKey(b"rotated", PskIdentity("app", "dev"))

    directory.add_device("app", "new", PskCredential(b"new"))  # an unknown identity cached as none
    assert (await keys.prefetch(b"new@app")) == PskKey(b"new", PskIdentity("app", "new"))

    directory.update_app("app", disabled=True)
    assert seen[-1] == ("app", None)
    assert not keys.known(b"dev@app")
    assert not keys.known(b"other@app")
    assert keys.known(b"dev@app2")

    stop()
    stop()  # idempotent
    directory.update_app("app2", disabled=True)
    assert seen[-1] == ("app", None)


async def test_a_lookup_that_saw_a_change_is_read_again_and_never_cached(directory: MemoryDirectory) -> None:
    """A key rotated (or removed) while a handshake's lookup ran must not open a session: the
    change came before the session had an identity, so nothing would close it afterwards."""
    gate, read = asyncio.Event(), asyncio.Event()
    original = directory.get_device_info

    async def slow(application: str, device: str) -> DeviceInfo | None:
        found = await original(application, device)
        read.set()
        await gate.wait()
        return found

    directory.get_device_info = slow  # type: ignore[method-assign]
    keys = keys_for(directory)
    stale = asyncio.ensure_future(keys.prefetch(b"dev@app"))
    await read.wait()
    directory.update_device("app", "dev", credentials=(PskCredential(b"rotated"),))
    # A handshake after the change never joins the lookup that began before it.
    fresh = asyncio.ensure_future(keys.prefetch(b"dev@app"))
    await asyncio.sleep(0)
    gate.set()
    assert (await stale) == PskKey(b"rotated", PskIdentity("app", "dev"))
    assert (await fresh) == PskKey(b"rotated", PskIdentity("app", "dev"))
    assert keys.find_dtls_psk(b"dev@app") == (b"rotated", PskIdentity("app", "dev"))
    assert keys.lookups == 2  # the stale one read again by joining the fresh lookup


async def test_a_registry_changing_under_every_read_fails_the_handshake(directory: MemoryDirectory) -> None:
    original = directory.get_device_info

    async def changing(application: str, device: str) -> DeviceInfo | None:
        found = await original(application, device)
        directory.update_device("app", "dev")  # another change lands while this read is running
        return found

    directory.get_device_info = changing  # type: ignore[method-assign]
    keys = keys_for(directory)
    assert await keys.prefetch(b"dev@app") is None
    assert keys.lookups == 3
    assert not keys.known(b"dev@app")


async def test_aclose_cancels_running_lookups(directory: MemoryDirectory) -> None:
    gate = asyncio.Event()

    async def never(application: str) -> ApplicationInfo | None:
        await gate.wait()
        return None

    directory.get_application_info = never  # type: ignore[method-assign]
    keys = keys_for(directory)
    waiting = asyncio.ensure_future(keys.prefetch(b"dev@app"))
    await asyncio.sleep(0)
    await keys.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
