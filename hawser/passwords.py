"""Password hashing for device credentials and anything else that stores a secret a human chose.

Argon2id (memory-hard) for everything Hawser hashes itself; bcrypt and SHA-512 crypt (`$6$`) hashes
imported from Drogue are verified too. Each hash string names its algorithm and cost, so the cost
can be raised later without a migration. Verification is CPU-bound: callers on the event loop run
it on a bounded pool (`PasswordVerifier`) and keep a cache of successes (auth.devices). A dummy hash
of the configured cost (`dummy_verify`) lets a lookup that found nothing cost what a wrong password costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hawser import _sha512_crypt
from hawser.errors import Overloaded


@dataclass(frozen=True, slots=True)
class KdfCost:
    time_cost: int = 2
    memory_kib: int = 19_456
    parallelism: int = 1


_hasher = PasswordHasher()
_dummy_hash: str | None = None


def configure(cost: KdfCost) -> None:
    """Set the cost of new hashes (existing hashes keep the cost they were made with)."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism)
    _dummy_hash = None


def dummy_hash() -> str:
    """An argon2id hash of a random secret, made once (per `configure`) with the configured cost."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(24))
    return _dummy_hash


def dummy_verify(password: str) -> bool:
    """Run one verification against `dummy_hash()` (so that an unknown name costs what a wrong
    password costs) and return False whatever happened."""
    verify_password(dummy_hash(), password)
    return False


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """True if `password` matches; False for a mismatch or a hash we cannot read."""
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        try:
            return bcrypt.checkpw(password.encode(), hashed.encode())
        except ValueError:
            return False
    if hashed.startswith(_sha512_crypt.PREFIX):
        return _sha512_crypt.verify(password, hashed)  # constant-time compare, never raises
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_sha512_crypt(hashed: str) -> None:
    """ValueError, saying why, unless `hashed` is a `$6$` hash that `verify_password` can check
    (well formed, rounds within the limit of `hawser._sha512_crypt.MAX_ROUNDS`)."""
    _sha512_crypt.check_hash(hashed)


async def verify_password_async(hashed: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, hashed, password)


class PasswordVerifier:
    """Runs verifications on its own pool of `workers` threads (default: one per CPU), at most
    `workers` at once. At most `max_waiting` more may wait for a thread; beyond that `verify`
    refuses at once with `Overloaded`, so a flood of guesses cannot queue up work without bound
    nor make real logins wait behind it for long. Lives on one event loop. `check` is the
    verification itself (`verify_password`; tests pass one they can hold)."""

    def __init__(
        self,
        *,
        workers: int | None = None,
        max_waiting: int = 64,
        check: Callable[[str, str], bool] = verify_password,
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._check = check
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hawser-kdf")
        self._slots = asyncio.Semaphore(self.workers)
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Verifications waiting for a thread now."""
        return self._waiting

    async def verify(self, hashed: str, password: str) -> bool:
        """`verify_password` on the pool; raises Overloaded when too many wait already."""
        await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            work = self._executor.submit(self._check, hashed, password)
        except BaseException:
            self._slots.release()
            raise

        def release(_: Future[bool]) -> None:
            # The slot is freed when the thread is, even if the awaiting task was cancelled.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(self._slots.release)

        work.add_done_callback(release)
        return await asyncio.wrap_future(work)

    async def dummy_verify(self, password: str) -> bool:
        """`dummy_verify` on the pool: always False, after the same work as a wrong password."""
        await self.verify(dummy_hash(), password)
        return False

    async def _acquire(self) -> None:
        if self._slots.locked():
            if self._waiting >= self.max_waiting:
                raise Overloaded("too many password verifications are waiting")
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()

    def close(self) -> None:
        """Stop the threads; verifications not started are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
