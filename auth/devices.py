"""Device authentication: credentials → the application, the device, and the device it publishes as.

Owns the verified-credential cache: successful password checks only, keyed by an HMAC (random
per-process key) of (application, user, password) so no clear password is ever held as a key, each
entry trusted for `cache_ttl_s` (which bounds staleness across instances) and dropped at once when
this process's registry reports a change to that device or application. Concurrent first requests
with the same credentials share one KDF run; KDF runs go through a bounded `PasswordVerifier`
(`Overloaded` when too many wait). Unknown application, unknown device and wrong password all raise
the same `BadCredentials` after the same work (a dummy verification), so names cannot be enumerated.
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
from hawser.errors import ApplicationDisabled, BadCredentials, DeviceDisabled, GatewayNotAllowed, Overloaded
from hawser.events import EventOrigin, EventTemplate, event_template
from hawser.passwords import PasswordVerifier
from registry.values import (
    ApplicationInfo,
    DeviceDirectory,
    DeviceInfo,
    PasswordCredential,
    RegistryChange,
    UserCredential,
)

CACHE_LOOKUPS = Counter(
    "hawser_device_auth_cache",
    "Verified-credential cache lookups of device authentication.",
    ["result"],
)
_CACHE_HIT = CACHE_LOOKUPS.labels("hit")
_CACHE_MISS = CACHE_LOOKUPS.labels("miss")
KDF_RUNS = Counter("hawser_device_auth_kdf", "Password hash verifications run for devices.")
AUTH_FAILURES = Counter("hawser_device_auth_failures", "Device authentications refused, by reason.", ["reason"])


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What a device presented. Without `device`, `user` is a device name or alias (checked
    against its own passwords) or the username of a unique `user` credential; with `device` (the
    `device` query parameter, Drogue's UsernamePassword), `user` is the username of a `user`
    credential of that device, unique or not. The password never appears in `repr`."""

    application: str
    user: str
    password: str = field(repr=False)
    device: str | None = None


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """Who is publishing: the application, the authenticated device (the sender) and the device
    the events are about (the same device, or the one a gateway publishes for)."""

    application: ApplicationInfo
    device: DeviceInfo
    target: DeviceInfo
    # Memo of `event_template` by instance: outcomes are cached, so this is built once per outcome.
    _templates: dict[str, EventTemplate] = field(default_factory=dict, init=False, repr=False, compare=False)

    def event_template(self, instance: str) -> EventTemplate:
        """The static CloudEvent attributes of this outcome's events, computed once."""
        template = self._templates.get(instance)
        if template is None:
            app, sender, target = self.application, self.device, self.target
            origin = EventOrigin(app.name, app.uid, target.name, target.uid, sender.name, sender.uid)
            template = self._templates[instance] = event_template(origin, instance)
        return template


_Verified = tuple[ApplicationInfo, DeviceInfo, AuthOutcome]


class DeviceAuthenticator:
    """Authenticates devices against a `DeviceDirectory` with a verified-credential cache.

    KDF runs use `verifier` if given (shared, not closed here), else a `PasswordVerifier` of
    `kdf_workers` threads (default: one per CPU) and `kdf_max_waiting` waiting, closed by `aclose`.
    """

    def __init__(
        self,
        directory: DeviceDirectory,
        *,
        cache_size: int,
        cache_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        kdf_workers: int | None = None,
        kdf_max_waiting: int = 64,
        verifier: PasswordVerifier | None = None,
    ) -> None:
        self._directory = directory
        self._key = secrets.token_bytes(32)
        self._owns_verifier = verifier is None
        self._verifier = verifier or PasswordVerifier(workers=kdf_workers, max_waiting=kdf_max_waiting)
        self._verified: GroupedTtlLru[bytes, _Verified] = GroupedTtlLru(cache_size, cache_ttl_s, clock)
        # (application, gateway, as-device) → the outcome, or None when not found or not allowed.
        # Values are 1-tuples so that "not allowed" can be cached too.
        self._targets: GroupedTtlLru[tuple[str, str, str], tuple[AuthOutcome | None]] = GroupedTtlLru(
            cache_size, cache_ttl_s, clock
        )
        # Keyed by (credential key, epoch): a request after a change never joins a verification
        # that started before it (and may have read the old password).
        self._inflight: dict[tuple[bytes, int], asyncio.Task[_Verified]] = {}
        #: Bumped on every registry change; a verification that saw a change while it ran is
        #: answered but not cached, since what it read may be stale.
        self._epoch = 0
        #: Password hash verifications run by this instance, dummy ones included (for tests and
        #: benchmarks).
        self.kdf_runs = 0
        directory.add_change_listener(self._on_change)

    # --- the hot path -----------------------------------------------------------------------------

    async def authenticate(self, credentials: DeviceCredentials, as_device: str | None = None) -> AuthOutcome:
        """Raises BadCredentials, ApplicationDisabled, DeviceDisabled, GatewayNotAllowed or
        Overloaded (too many password verifications waiting; cache hits never wait)."""
        key = self._cache_key(credentials)
        verified = self._verified.get(key)
        if verified is None:
            _CACHE_MISS.inc()
            verified = await self._verify_shared(key, credentials)
        else:
            _CACHE_HIT.inc()
        return await self._admit(verified, as_device)

    async def authenticate_identity(self, application: str, device: str, as_device: str | None = None) -> AuthOutcome:
        """The outcome for a device whose transport verified who it is already (DTLS with its
        pre-shared key; client certificates later): no password to check, but the application and
        the device must exist and be enabled, and a device published for must list it as a gateway.
        Cached like verified passwords and dropped on the same registry changes. Raises what
        `authenticate` raises."""
        # A NUL first: never the start of a password key (those begin with a length).
        key = hmac.digest(self._key, f"\0{len(application)}:{application}{device}".encode(), hashlib.sha256)
        verified = self._verified.get(key)
        if verified is None:
            _CACHE_MISS.inc()
            epoch = self._epoch
            app = await self._directory.get_application_info(application)
            found = await self._directory.get_device_info(application, device) if app is not None else None
            if app is None or found is None:
                AUTH_FAILURES.labels("bad-credentials").inc()
                raise BadCredentials()
            verified = (app, found, AuthOutcome(app, found, found))
            if epoch == self._epoch:
                self._verified.put(key, app.name, found.name, verified)
        else:
            _CACHE_HIT.inc()
        return await self._admit(verified, as_device)

    async def _admit(self, verified: _Verified, as_device: str | None) -> AuthOutcome:
        """Refuse disabled applications and devices, and resolve the device published for."""
        app, device, own = verified
        if app.disabled:
            AUTH_FAILURES.labels("application-disabled").inc()
            raise ApplicationDisabled()
        if device.disabled:
            AUTH_FAILURES.labels("device-disabled").inc()
            raise DeviceDisabled()
        if as_device is None or as_device == device.name:
            return own
        outcome = await self._target(app, device, as_device)
        # Not found and not allowed answer alike: a device may not probe for others' names.
        if outcome is None:
            AUTH_FAILURES.labels("gateway-not-allowed").inc()
            raise GatewayNotAllowed(f"not allowed to publish as {as_device!r}")
        if outcome.target.disabled:
            AUTH_FAILURES.labels("device-disabled").inc()
            raise DeviceDisabled("the device published for is disabled")
        return outcome

    def _cache_key(self, credentials: DeviceCredentials) -> bytes:
        # Length-prefixed so that no two tuples encode alike; "-" marks "no device" (a length
        # prefix always starts with a digit).
        application, user, device = credentials.application, credentials.user, credentials.device
        scope = "-" if device is None else f"{len(device)}:{device}"
        message = f"{len(application)}:{application}{len(user)}:{user}{scope}{credentials.password}"
        return hmac.digest(self._key, message.encode(), hashlib.sha256)

    async def _verify_shared(self, key: bytes, credentials: DeviceCredentials) -> _Verified:
        epoch = self._epoch
        task = self._inflight.get((key, epoch))
        if task is None:
            task = asyncio.get_running_loop().create_task(self._verify(key, credentials, epoch))
            self._inflight[(key, epoch)] = task
            task.add_done_callback(lambda done: self._settled((key, epoch), done))
        # Shielded: one waiter giving up (client gone) must not cancel the others' verification.
        return await asyncio.shield(task)

    def _settled(self, slot: tuple[bytes, int], task: asyncio.Task[_Verified]) -> None:
        if self._inflight.get(slot) is task:
            del self._inflight[slot]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unwaited failure is not reported as lost

    async def _verify(self, key: bytes, credentials: DeviceCredentials, epoch: int) -> _Verified:
        try:
            found = await self._find(credentials)
        except Overloaded:
            AUTH_FAILURES.labels("overloaded").inc()
            raise
        if found is None:
            AUTH_FAILURES.labels("bad-credentials").inc()
            raise BadCredentials()
        app, device = found
        verified = (app, device, AuthOutcome(app, device, device))
        if epoch == self._epoch:
            self._verified.put(key, app.name, device.name, verified)
        return verified

    async def _find(self, credentials: DeviceCredentials) -> tuple[ApplicationInfo, DeviceInfo] | None:
        """The application and the device whose credential matches, after exactly the KDF runs
        that matching took, or one dummy run if there was nothing to check."""
        application, user, password = credentials.application, credentials.user, credentials.password
        runs = self.kdf_runs
        app = await self._directory.get_application_info(application)
        if app is not None:
            directory = self._directory
            if credentials.device is not None:
                # Drogue's UsernamePassword for a named device: that device's `user` credential.
                # A user naming the device itself may also use the device's own password.
                own = user == credentials.device
                device = await self._lookup(application, credentials.device)
                if device is not None and await self._matches(device, user, password, own=own, unique=False):
                    return app, device
            else:
                device = await self._lookup(application, user)
                if device is not None and await self._matches(device, user, password, own=True, unique=False):
                    return app, device
                holder = await directory.find_device_by_username(application, user)
                if (
                    holder is not None
                    and (device is None or holder.name != device.name)
                    and await self._matches(holder, user, password, own=False, unique=True)
                ):
                    return app, holder
        if self.kdf_runs == runs:
            self._count_kdf_run()
            await self._verifier.dummy_verify(password)
        return None

    async def _lookup(self, application: str, name: str) -> DeviceInfo | None:
        """A device by name, else by alias."""
        device = await self._directory.get_device_info(application, name)
        if device is None:
            device = await self._directory.find_device_by_alias(application, name)
        return device

    async def _matches(self, device: DeviceInfo, user: str, password: str, *, own: bool, unique: bool) -> bool:
        """Whether `password` is one of the device's own (`pass`, when `own`) or that of its `user`
        credential with this username (only a unique one, when `unique`)."""
        for credential in device.credentials:
            if isinstance(credential, PasswordCredential):
                if not own:
                    continue
            elif (
                not isinstance(credential, UserCredential)
                or credential.username != user
                or (unique and not credential.unique)
            ):
                continue
            self._count_kdf_run()
            if await self._verifier.verify(credential.hash, password):
                return True
        return False

    def _count_kdf_run(self) -> None:
        self.kdf_runs += 1
        KDF_RUNS.inc()

    async def _target(self, app: ApplicationInfo, gateway: DeviceInfo, name: str) -> AuthOutcome | None:
        """The outcome of `gateway` publishing for the device `name` (by name or alias), None
        when there is no such device or it does not list the gateway; both are cached."""
        key = (app.name, gateway.name, name)
        found = self._targets.get(key)
        if found is not None:
            return found[0]
        epoch = self._epoch
        target = await self._lookup(app.name, name)
        outcome = None
        # By alias a device may name itself: that needs no gateway permission.
        if target is not None and (target.name == gateway.name or gateway.name in target.gateways):
            outcome = AuthOutcome(app, gateway, target)
        if epoch == self._epoch:
            self._targets.put(key, app.name, target.name if target else name, (outcome,))
        return outcome

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
        """Cancel verifications still running (their waiters are gone with the server) and stop
        the verifier's threads if this authenticator made it."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_verifier:
            self._verifier.close()
