"""Password hashing for device credentials and anything else that stores a secret a human chose.

Argon2id (memory-hard) for everything Hawser hashes itself; bcrypt and SHA-512 crypt (`$6$`) hashes
imported from Drogue are verified too. Each hash string names its algorithm and cost, so the cost
can be raised later without a migration. Verification is CPU-bound: callers on the event loop run
it in a worker thread (`verify_password_async`) and keep a cache of successes (auth.devices).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hawser import _sha512_crypt


@dataclass(frozen=True, slots=True)
class KdfCost:
    time_cost: int = 2
    memory_kib: int = 19_456
    parallelism: int = 1


_hasher = PasswordHasher()


def configure(cost: KdfCost) -> None:
    """Set the cost of new hashes (existing hashes keep the cost they were made with)."""
    global _hasher
    _hasher = PasswordHasher(
        time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism
    )


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
