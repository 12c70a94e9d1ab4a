"""SHA-512 crypt (`$6$`, Ulrich Drepper's SHA-crypt spec), verification only, in pure Python.

Drogue Cloud lets devices carry such hashes, so imported devices must authenticate with them; we
never create them (new hashes are argon2id). Rounds above `MAX_ROUNDS` and passwords above
`MAX_PASSWORD_BYTES` are refused: both scale the work of one attempt (a DoS guard).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

PREFIX = "$6$"
DEFAULT_ROUNDS = 5_000
SPEC_MIN_ROUNDS = 1_000
SPEC_MAX_ROUNDS = 999_999_999
# Not in the spec: glibc allows 999,999,999 rounds (minutes of CPU in pure Python). Hashes made by
# common tools use 5,000 to a few 100,000; more than this is refused rather than computed.
MAX_ROUNDS = 1_000_000
# Not in the spec either: every round hashes the password twice, and the password comes from an
# unauthenticated client. libxcrypt itself refuses passphrases over 512 bytes.
MAX_PASSWORD_BYTES = 1_024
SALT_MAX = 16

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Which digest bytes go into each group of four characters (the spec's transposition).
_GROUPS = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)
_SETTINGS = re.compile(r"\$6\$(?:rounds=(?P<rounds>[0-9]+)\$)?(?P<salt>[^$]*)")
_FULL_HASH = re.compile(
    r"\$6\$(?:rounds=(?P<rounds>[0-9]+)\$)?(?P<salt>[^$]{0,16})\$(?P<digest>[./0-9A-Za-z]{85}[./01])"
)


@dataclass(frozen=True, slots=True)
class Sha512Settings:
    """What a `$6$` hash says about how to recompute it."""

    salt: str
    rounds: int = DEFAULT_ROUNDS
    explicit_rounds: bool = False

    def prefix(self) -> str:
        rounds = f"rounds={self.rounds}$" if self.explicit_rounds else ""
        return f"{PREFIX}{rounds}{self.salt}"


def parse_settings(settings: str) -> Sha512Settings:
    """The salt and rounds of a settings string (`$6$[rounds=N$]salt[$...]`), as the spec reads it:
    the salt ends at `$` and is cut to 16 characters, rounds are clamped to 1000..999999999.
    ValueError if it is not a `$6$` string or asks for more than MAX_ROUNDS."""
    match = _SETTINGS.match(settings)
    if match is None:
        raise ValueError("not a SHA-512 crypt string (expected '$6$')")
    explicit = match["rounds"] is not None
    rounds = DEFAULT_ROUNDS
    if explicit:
        text = match["rounds"]  # very long digit strings only clamp to the maximum (and int() refuses them)
        rounds = min(max(int(text), SPEC_MIN_ROUNDS), SPEC_MAX_ROUNDS) if len(text) <= 10 else SPEC_MAX_ROUNDS
    if rounds > MAX_ROUNDS:
        raise ValueError(f"SHA-512 crypt rounds above {MAX_ROUNDS} are not supported")
    if not match["salt"].isascii():
        raise ValueError("SHA-512 crypt salt must be ASCII")
    return Sha512Settings(match["salt"][:SALT_MAX], rounds, explicit)


def check_hash(hashed: str) -> Sha512Settings:
    """Validate a complete stored hash (`$6$[rounds=N$]salt$<86 characters>`): one that the spec
    would produce and that we agree to verify. ValueError with the reason otherwise."""
    match = _FULL_HASH.fullmatch(hashed)
    if match is None:
        raise ValueError(
            "not a SHA-512 crypt hash ('$6$[rounds=N$]<salt of up to 16 characters>$<86 characters>')"
        )
    settings = parse_settings(hashed)
    # The spec writes the clamped count back without leading zeros; any other text cannot match.
    if match["rounds"] not in (None, str(settings.rounds)):
        raise ValueError(f"SHA-512 crypt rounds must be between {SPEC_MIN_ROUNDS} and {MAX_ROUNDS}")
    return settings


def sha512_crypt(password: bytes, settings: str) -> str:
    """The full hash string of `password` under `settings` (a settings string or a full hash)."""
    if len(password) > MAX_PASSWORD_BYTES:
        raise ValueError(f"passwords over {MAX_PASSWORD_BYTES} bytes are not supported")
    parsed = parse_settings(settings)
    return f"{parsed.prefix()}${_encode(_digest(password, parsed.salt.encode(), parsed.rounds))}"


def verify(password: str, hashed: str) -> bool:
    """True if `password` matches the `$6$` hash; False for a mismatch or anything malformed."""
    try:
        check_hash(hashed)
        computed = sha512_crypt(password.encode(), hashed)
    except (ValueError, UnicodeError):
        return False
    return hmac.compare_digest(computed.encode(), hashed.encode())


def _digest(password: bytes, salt: bytes, rounds: int) -> bytes:
    """The spec's steps 1 to 21: the 64-byte digest before encoding."""
    size = len(password)
    alternate = hashlib.sha512(password + salt + password).digest()
    first = hashlib.sha512(password + salt)
    first.update(_repeat(alternate, size))
    bits = size
    while bits > 0:
        first.update(alternate if bits & 1 else password)
        bits >>= 1
    a = first.digest()
    p_bytes = _repeat(hashlib.sha512(password * size).digest(), size)
    s_bytes = _repeat(hashlib.sha512(salt * (16 + a[0])).digest(), len(salt))

    c = a
    for i in range(rounds):
        step = hashlib.sha512(p_bytes if i & 1 else c)
        if i % 3:
            step.update(s_bytes)
        if i % 7:
            step.update(p_bytes)
        step.update(c if i & 1 else p_bytes)
        c = step.digest()
    return c


def _repeat(block: bytes, length: int) -> bytes:
    """`length` bytes made of `block` repeated (and the last copy cut short)."""
    return (block * (length // len(block) + 1))[:length]


def _encode(digest: bytes) -> str:
    """The spec's base64: 3 bytes at a time (low 6 bits first), in the order of `_GROUPS`."""
    out: list[str] = []
    for b2, b1, b0 in _GROUPS:
        out.append(_b64((digest[b2] << 16) | (digest[b1] << 8) | digest[b0], 4))
    out.append(_b64(digest[63], 2))
    return "".join(out)


def _b64(word: int, count: int) -> str:
    chars = []
    for _ in range(count):
        chars.append(_ALPHABET[word & 0x3F])
        word >>= 6
    return "".join(chars)
