"""Device authentication: credentials → the application, the device, and the device it publishes as.

Owns the verified-credential cache: successful password checks only, keyed by an HMAC (random
per-process key) of (application, user, password) so no clear password is ever held as a key, each
entry trusted for `cache_ttl_s` (which bounds staleness across instances) and dropped at once when
this process's registry reports a change to that device or application. Concurrent first requests
with the same credentials share one KDF run. Unknown application, unknown device and wrong password
all raise the same `BadCredentials`, so callers cannot enumerate names.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter

from auth._cache import GroupedTtlLru
from hawser.errors import ApplicationDisabled, BadCredentials, DeviceDisabled, GatewayNotAllowed
from hawser.passwords import verify_password_async
from registry.values import (
    ApplicationInfo,
    DeviceDirectory,
    DeviceInfo,
    PasswordCredential,
    RegistryChange,
    UserCredential,
)

CACHE_LOOKUPS = Counter(
    "hawser_device_auth_cache", "Verified-credential cache lookups of device authentication.",
    ["result"],
)
_CACHE_HIT = CACHE_LOOKUPS.labels("hit")
_CACHE_MISS = CACHE_LOOKUPS.labels("miss")
KDF_RUNS = Counter("hawser_device_auth_kdf", "Password hash verifications run for devices.")
AUTH_FAILURES = Counter(
    "hawser_device_auth_failures", "Device authentications refused, by reason.", ["reason"]
)


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What a device presented: `user` is a device name or the username of a `user` credential
    (both are tried). The password never appears in `repr`."""

    application: str
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """Who is publishing: the application, the authenticated device (the sender) and the device
    the events are about (the same device, or the one a gateway publishes for)."""

    application: ApplicationInfo
    device: DeviceInfo
    target: DeviceInfo


class DeviceAuthenticator:
    """Authenticates devices against a `DeviceDirectory` with a verified-credential cache."""

    def __init__(
        self,
        directory: DeviceDirectory,
        *,
        cache_size: int,
        cache_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._key = secrets.token_bytes(32)
        self._verified: GroupedTtlLru[bytes, tuple[ApplicationInfo, DeviceInfo]] = GroupedTtlLru(
            cache_size, cache_ttl_s, clock
        )
        # Values are 1-tuples so that "known not to exist" can be cached too.
        self._targets: GroupedTtlLru[tuple[str, str], tuple[DeviceInfo | None]] = GroupedTtlLru(
            cache_size, cache_ttl_s, clock
        )
        self._inflight: dict[bytes, asyncio.Task[tuple[ApplicationInfo, DeviceInfo]]] = {}
        #: Bumped on every registry change; a verification that saw a change while it ran is
        #: answered but not cached, since what it read may be stale.
        self._epoch = 0
        #: Password hash verifications run by this instance (for tests and benchmarks).
        self.kdf_runs = 0
        directory.add_change_listener(self._on_change)

    # --- the hot path -----------------------------------------------------------------------------

    async def authenticate(
        self, credentials: DeviceCredentials, as_device: str | None = None
    ) -> AuthOutcome:
        """Raises BadCredentials, ApplicationDisabled, DeviceDisabled or GatewayNotAllowed."""
        application, user, password = credentials.application, credentials.user, credentials.password
        key = self._cache_key(application, user, password)
        verified = self._verified.get(key)
        if verified is None:
            _CACHE_MISS.inc()
            verified = await self._verify_shared(key, application, user, password)
        else:
            _CACHE_HIT.inc()
        app, device = verified
        if app.disabled:
            AUTH_FAILURES.labels("application-disabled").inc()
            raise ApplicationDisabled()
        if device.disabled:
            AUTH_FAILURES.labels("device-disabled").inc()
            raise DeviceDisabled()
        if as_device is None or as_device == device.name:
            return AuthOutcome(app, device, device)
        target = await self._target(app.name, as_device)
        # Not found and not allowed answer alike: a device may not probe for others' names.
        if target is None or device.name not in target.gateways:
            AUTH_FAILURES.labels("gateway-not-allowed").inc()
            raise GatewayNotAllowed(f"not allowed to publish as {as_device!r}")
        if target.disabled:
            AUTH_FAILURES.labels("device-disabled").inc()
            raise DeviceDisabled("the device published for is disabled")
        return AuthOutcome(app, device, target)

    def _cache_key(self, application: str, user: str, password: str) -> bytes:
        # Length-prefixed so that no two triples encode alike.
        message = f"{len(application)}:{application}{len(user)}:{user}{password}".encode()
        return hmac.digest(self._key, message, hashlib.sha256)

    async def _verify_shared(
        self, key: bytes, application: str, user: str, password: str
    ) -> tuple[ApplicationInfo, DeviceInfo]:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._verify(key, application, user, password, self._epoch)
            )
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        # Shielded: one waiter giving up (client gone) must not cancel the others' verification.
        return await asyncio.shield(task)

    def _settled(self, key: bytes, task: asyncio.Task[tuple[ApplicationInfo, DeviceInfo]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unwaited failure is not reported as lost

    async def _verify(
        self, key: bytes, application: str, user: str, password: str, epoch: int
    ) -> tuple[ApplicationInfo, DeviceInfo]:
        app = await self._directory.get_application_info(application)
        if app is None:
            AUTH_FAILURES.labels("bad-credentials").inc()
            raise BadCredentials()
        by_name = await self._directory.get_device_info(application, user)
        if by_name is not None and await self._matches(by_name, user, password, own=True):
            return self._remember(key, epoch, app, by_name)
        by_username = await self._directory.find_device_by_username(application, user)
        if (
            by_username is not None
            and (by_name is None or by_username.name != by_name.name)
            and await self._matches(by_username, user, password, own=False)
        ):
            return self._remember(key, epoch, app, by_username)
        AUTH_FAILURES.labels("bad-credentials").inc()
        raise BadCredentials()

    async def _matches(self, device: DeviceInfo, user: str, password: str, *, own: bool) -> bool:
        """Whether `password` is the device's own (`pass`, when `user` is its name) or that of
        its `user` credential with this username."""
        for credential in device.credentials:
            if isinstance(credential, PasswordCredential):
                if not own:
                    continue
            elif not isinstance(credential, UserCredential) or credential.username != user:
                continue
            self.kdf_runs += 1
            KDF_RUNS.inc()
            if await verify_password_async(credential.hash, password):
                return True
        return False

    def _remember(
        self, key: bytes, epoch: int, app: ApplicationInfo, device: DeviceInfo
    ) -> tuple[ApplicationInfo, DeviceInfo]:
        if epoch == self._epoch:
            self._verified.put(key, app.name, device.name, (app, device))
        return app, device

    async def _target(self, application: str, name: str) -> DeviceInfo | None:
        """The device a gateway publishes for, by name or alias; misses are cached as well."""
        key = (application, name)
        found = self._targets.get(key)
        if found is not None:
            return found[0]
        epoch = self._epoch
        target = await self._directory.get_device_info(application, name)
        if target is None:
            target = await self._directory.find_device_by_alias(application, name)
        if epoch == self._epoch:
            self._targets.put(key, application, target.name if target else name, (target,))
        return target

    # --- invalidation -------------------------------------------------------------------------------

    def _on_change(self, change: RegistryChange) -> None:
        self._epoch += 1
        if change.kind == "application" or change.device is None:
            self._verified.drop_application(change.application)
        else:
            self._verified.drop_device(change.application, change.device)
        # Any device change may add or remove an alias or a gateway: drop the app's resolutions.
        self._targets.drop_application(change.application)

    def clear_cache(self) -> None:
        self._epoch += 1
        self._verified.clear()
        self._targets.clear()

    async def aclose(self) -> None:
        """Cancel verifications still running (their waiters are gone with the server)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
