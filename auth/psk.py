"""Pre-shared keys for CoAP over DTLS: identity `device@app` → the device's `psk` key, and who a
DTLS session authenticated as.

The DTLS stack (tinydtls) asks for a key synchronously in the middle of a handshake, while the
registry is async SQL; so `PskKeys` is a bounded cache with a maximum age that the transport fills
ahead (`prefetch`, one lookup shared by concurrent handshakes) and tinydtls reads (`find_dtls_psk`).
Unknown identities are cached too, so a handshake flood cannot hammer the registry. A registry
change drops what it made stale and tells `watch`ers, which close the sessions it concerns.
Keys are never logged. Disabled devices still get their key: that is checked per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from auth._cache import GroupedTtlLru
from hawser.errors import Overloaded
from registry.values import DeviceDirectory, PskCredential, RegistryChange

log = logging.getLogger(__name__)

#: tinydtls's DTLS_PSK_MAX_KEY_LEN (AES-128): a longer key cannot be used. DTLSSocket even copies
#: whatever it is given into a buffer of this size, so longer keys must never reach it.
MAX_KEY_BYTES = 16
#: tinydtls's DTLS_PSK_MAX_CLIENT_IDENTITY_LEN: it refuses a handshake with a longer identity.
MAX_IDENTITY_BYTES = 32
#: Reads of one key by a handshake while the registry keeps changing under them.
_MAX_READS = 3


@dataclass(frozen=True, slots=True)
class PskIdentity:
    """The device a DTLS session proved to be, by its pre-shared key."""

    application: str
    device: str


@dataclass(frozen=True, slots=True)
class PskKey:
    """A device's key for DTLS, and who holds it. The key never appears in `repr`."""

    key: bytes = field(repr=False)
    identity: PskIdentity


#: Called with (application, device or None for the whole application) after a registry change.
RevocationListener = Callable[[str, "str | None"], None]


def parse_identity(identity: bytes) -> PskIdentity | None:
    """`device@app` split on the LAST `@` (as `endpoints.uplink.split_user`; application names
    never hold one), the device part percent-decoded when it decodes; None for anything that can
    name no device (not UTF-8, no `@`, an empty part, control characters, too long for tinydtls)."""
    if not identity or len(identity) > MAX_IDENTITY_BYTES:
        return None
    try:
        text = identity.decode("utf-8")
    except UnicodeDecodeError:
        return None
    device, at, application = text.rpartition("@")
    if "%" in device:
        with contextlib.suppress(UnicodeDecodeError):
            device = unquote(device, errors="strict")
    if not at or not device or not application or not (device + application).isprintable():
        return None
    return PskIdentity(application, device)


class PskKeys:
    """identity → `PskKey` (or "none") for the DTLS server, from a `DeviceDirectory`.

    Entries are trusted for `cache_ttl_s` and at most `cache_size` are kept (0 for either: no
    cache, every handshake reads the registry; the transport hands the prefetched key to its
    handshake directly, so it never depends on the cache). At most `max_pending` distinct
    lookups run at once; beyond that `prefetch` raises `Overloaded` (the DTLS client retransmits).
    """

    def __init__(
        self,
        directory: DeviceDirectory,
        *,
        cache_size: int,
        cache_ttl_s: float,
        max_pending: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        # 1-tuples, so that "no such key" can be cached too.
        self._cache: GroupedTtlLru[bytes, tuple[PskKey | None]] = GroupedTtlLru(cache_size, cache_ttl_s, clock)
        self._max_pending = max_pending
        # Keyed by (identity, epoch): a handshake after a change never joins a lookup that began
        # before it (and may have read the old key).
        self._inflight: dict[tuple[bytes, int], asyncio.Task[PskKey | None]] = {}
        self._epoch = 0
        self._listeners: list[RevocationListener] = []
        #: Registry lookups made (for tests and metrics).
        self.lookups = 0
        directory.add_change_listener(self._on_change)

    # --- what the DTLS transport calls -------------------------------------------------------------

    def known(self, identity: bytes) -> bool:
        """Whether `find_dtls_psk` can answer for `identity` without a registry lookup (a cached
        answer, or an identity that names no device)."""
        return parse_identity(identity) is None or self._cache.get(identity) is not None

    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, PskIdentity]:
        """(key, claims) from the cache, as aiocoap's `CredentialsMap.find_dtls_psk` answers;
        KeyError when unknown or not cached. Synchronous: tinydtls calls it mid-handshake."""
        hit = self._cache.get(identity)
        if hit is None or hit[0] is None:
            raise KeyError("no pre-shared key for this identity")
        return hit[0].key, hit[0].identity

    async def prefetch(self, identity: bytes) -> PskKey | None:
        """The key of `identity` (None if there is none), read from the registry unless cached,
        and cached. Concurrent calls for one identity share one lookup. A lookup the registry
        changed under is read again (its key may be one just rotated or removed, and a session
        opened with it would outlive the change: `watch`ers only see sessions already keyed).
        Raises `Overloaded` when `max_pending` other lookups are running."""
        claims = parse_identity(identity)
        if claims is None:
            return None
        for _ in range(_MAX_READS):
            hit = self._cache.get(identity)
            if hit is not None:
                return hit[0]
            slot = (identity, self._epoch)
            task = self._inflight.get(slot)
            if task is None:
                if len(self._inflight) >= self._max_pending:
                    raise Overloaded("too many pre-shared key lookups running")
                task = asyncio.get_running_loop().create_task(self._lookup(identity, claims, slot[1]))
                self._inflight[slot] = task
                task.add_done_callback(functools.partial(self._settled, slot))
            # Shielded: one handshake giving up must not cancel the lookup others wait for.
            found = await asyncio.shield(task)
            if slot[1] == self._epoch:
                return found
        return None  # the registry changes faster than it can be read: this handshake fails

    def watch(self, listener: RevocationListener) -> Callable[[], None]:
        """Call `listener` after every registry change; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def aclose(self) -> None:
        """Cancel lookups still running (their handshakes are gone with the server)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- internals -----------------------------------------------------------------------------------

    async def _lookup(self, identity: bytes, claims: PskIdentity, epoch: int) -> PskKey | None:
        self.lookups += 1
        application, device = claims.application, claims.device
        found = None
        if await self._directory.get_application_info(application) is not None:
            info = await self._directory.get_device_info(application, device)
            keys = [c.key for c in info.credentials if isinstance(c, PskCredential)] if info else []
            usable = [k for k in keys if 0 < len(k) <= MAX_KEY_BYTES]
            if len(usable) < len(keys):
                log.warning("a psk of device %r of %r is longer than %d bytes; DTLS cannot use it",
                            device, application, MAX_KEY_BYTES)
            # tinydtls asks for exactly one key per identity: the first usable one is it.
            if usable:
                found = PskKey(usable[0], claims)
        if epoch == self._epoch:
            self._cache.put(identity, application, device, (found,))
        return found

    def _settled(self, slot: tuple[bytes, int], task: asyncio.Task[PskKey | None]) -> None:
        if self._inflight.get(slot) is task:
            del self._inflight[slot]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unwaited failure is not reported as lost

    def _on_change(self, change: RegistryChange) -> None:
        self._epoch += 1
        if change.kind == "application" or change.device is None:
            self._cache.drop_application(change.application)
            device = None
        else:
            self._cache.drop_device(change.application, change.device)
            device = change.device
        for listener in list(self._listeners):
            listener(change.application, device)


__all__ = ["MAX_IDENTITY_BYTES", "MAX_KEY_BYTES", "PskIdentity", "PskKey", "PskKeys", "parse_identity"]
