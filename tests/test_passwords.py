"""hawser.passwords: argon2id and bcrypt round trips, and SHA-512 crypt (`$6$`) checked against the
spec's published vectors and, where the platform still has it, glibc/libxcrypt through `crypt`."""

from __future__ import annotations

import asyncio
import random
import string
import threading
import warnings
from collections.abc import Callable, Iterator

import bcrypt
import pytest

from hawser import _sha512_crypt, passwords
from hawser._sha512_crypt import MAX_PASSWORD_BYTES, MAX_ROUNDS, sha512_crypt
from hawser.errors import Overloaded

# Drepper's test vectors (SHA-crypt.txt), plus libxcrypt's "explicit rounds=5000 is preserved".
SPEC_VECTORS = [
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("$6$rounds=5000$saltstring", "Hello world!",
     "$6$rounds=5000$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs"
     "/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8a"
     "udkUEm0"),
    ("$6$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwG"
     "qd8p4ur1"),
    ("$6$rounds=77777$short", "we have a short salt string but not a short password",
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"),
    ("$6$rounds=123456$asaltof16chars..", "a short string",
     "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJ"
     "AstJeonj1"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaH"
     "HrsX."),
    ("$6$$bar$", "foo",
     "$6$$QMXjqd7rHQZPQ1yHsXkQqC1FBzDiVfTHXL.LaeDAeVV.IzMaV9VU4MQ8kPuZa2SOP1A0RPm772EaFYjpEJtdu."),
]
HELLO = SPEC_VECTORS[0][2]


def _system_crypt() -> Callable[[str, str], str | None] | None:
    """glibc/libxcrypt's crypt(3) through the deprecated `crypt` module (gone in Python 3.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    return crypt.crypt


SYSTEM_CRYPT = _system_crypt()


@pytest.fixture
def cheap_argon2() -> Iterator[None]:
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=1024, parallelism=1))
    yield
    passwords.configure(passwords.KdfCost())


def test_argon2_round_trip(cheap_argon2: None) -> None:
    hashed = passwords.hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert "s3cret" not in hashed
    assert passwords.verify_password(hashed, "s3cret")
    assert not passwords.verify_password(hashed, "s3cret ")
    assert passwords.hash_password("s3cret") != hashed  # salted


def test_bcrypt_round_trip() -> None:
    hashed = bcrypt.hashpw(b"legacy", bcrypt.gensalt(rounds=4)).decode()
    assert passwords.verify_password(hashed, "legacy")
    assert not passwords.verify_password(hashed, "Legacy")
    assert not passwords.verify_password("$2b$04$truncated", "legacy")


@pytest.mark.parametrize(("settings", "password", "expected"), SPEC_VECTORS)
def test_sha512_spec_vectors(settings: str, password: str, expected: str) -> None:
    assert sha512_crypt(password.encode(), settings) == expected
    assert sha512_crypt(password.encode(), expected) == expected  # a full hash serves as its settings
    assert passwords.verify_password(expected, password)
    assert not passwords.verify_password(expected, password + "!")
    assert not passwords.verify_password(expected, password[:-1])


def _oracle_cases() -> list[tuple[str, str]]:
    rng = random.Random(20240604)
    salt_chars = string.ascii_letters + string.digits + "./"
    cases = [
        ("", "$6$emptypw"),
        ("pw", "$6$"),
        ("pw", "$6$exactly16chars."),
        ("pw", "$6$muchlongerthansixteenchars"),
        ("grüße, 密码 🙂", "$6$unicode"),
        ("x" * 64, "$6$rounds=1000$block"),
        ("y" * 65, "$6$rounds=1001$block"),
        ("z" * 200, "$6$rounds=4321$longpassword"),
        ("Hello world!", "$6$rounds=20000$saltstring"),
    ]
    for _ in range(40):
        password = "".join(rng.choice(string.printable[:95]) for _ in range(rng.randint(1, 130)))
        salt = "".join(rng.choice(salt_chars) for _ in range(rng.randint(0, 20)))
        rounds = rng.choice(["", "rounds=1000$", "rounds=5000$", "rounds=2345$"])
        cases.append((password, f"$6${rounds}{salt}"))
    return cases


@pytest.mark.skipif(SYSTEM_CRYPT is None, reason="no crypt module: the spec vectors stand in for it")
@pytest.mark.parametrize(("password", "settings"), _oracle_cases())
def test_sha512_matches_system_crypt(password: str, settings: str) -> None:
    assert SYSTEM_CRYPT is not None
    expected = SYSTEM_CRYPT(password, settings)
    assert expected is not None
    assert expected.startswith("$6$")
    assert sha512_crypt(password.encode(), settings) == expected
    assert passwords.verify_password(expected, password)
    assert not passwords.verify_password(expected, password + "a")
    assert not passwords.verify_password(expected, password[1:] or "a")


def test_salt_is_cut_to_sixteen_characters() -> None:
    hashed = sha512_crypt(b"pw", "$6$0123456789abcdefXYZ")
    assert hashed.startswith("$6$0123456789abcdef$")
    assert passwords.verify_password(hashed, "pw")
    # A stored hash whose salt was not cut cannot come from the spec: refused, not verified.
    longer = hashed.replace("abcdef$", "abcdefX$")
    assert not passwords.verify_password(longer, "pw")


@pytest.mark.parametrize(
    "hashed",
    [
        "$6$",
        "$6$saltstring",
        "$6$saltstring$",
        HELLO[:-1],
        HELLO + "x",
        HELLO[:-1] + "z",  # the last character carries 2 bits only: '.', '/', '0' or '1'
        HELLO.replace("svn8", "svn*"),
        HELLO.replace("$6$", "$5$"),
        HELLO.replace("$6$", "$6$rounds=5000"),
        HELLO.replace("$6$", "$6$rounds=$"),
        HELLO.replace("$6$", "$6$rounds=10$"),  # the spec writes the clamped count, 1000
        HELLO.replace("$6$", "$6$rounds=05000$"),
        HELLO.replace("$6$", "$6$rounds=-5000$"),
        HELLO.replace("$6$", f"$6$rounds={MAX_ROUNDS + 1}$"),
        HELLO.replace("$6$", "$6$rounds=999999999$"),
        HELLO.replace("$6$", "$6$rounds=" + "9" * 5000 + "$"),
        HELLO.replace("saltstring", "sält"),
        HELLO.replace("$6$", "$6$$"),
    ],
)
def test_sha512_malformed_hashes_are_false(hashed: str) -> None:
    assert not passwords.verify_password(hashed, "Hello world!")
    with pytest.raises(ValueError, match="SHA-512 crypt"):
        passwords.check_sha512_crypt(hashed)


def test_sha512_rounds_limit() -> None:
    at_limit = sha512_crypt(b"pw", f"$6$rounds={MAX_ROUNDS}$limit")
    assert passwords.verify_password(at_limit, "pw")
    passwords.check_sha512_crypt(at_limit)
    with pytest.raises(ValueError, match="rounds"):
        sha512_crypt(b"pw", f"$6$rounds={MAX_ROUNDS + 1}$limit")


def test_sha512_password_length_limit() -> None:
    longest = "p" * MAX_PASSWORD_BYTES
    hashed = sha512_crypt(longest.encode(), "$6$length")
    assert passwords.verify_password(hashed, longest)
    assert not passwords.verify_password(hashed, longest + "p")
    assert not passwords.verify_password(hashed, "é" * (MAX_PASSWORD_BYTES // 2 + 1))


def test_sha512_verify_never_raises_on_odd_passwords() -> None:
    hashed = sha512_crypt(b"pw", "$6$odd")
    assert not _sha512_crypt.verify("\udcff", hashed)  # a lone surrogate cannot be encoded
    assert not _sha512_crypt.verify("pw\x00", hashed)
    assert _sha512_crypt.verify("pw", hashed)


async def test_verify_async_dispatches_sha512() -> None:
    assert await passwords.verify_password_async(HELLO, "Hello world!")
    assert not await passwords.verify_password_async(HELLO, "hello world!")


async def test_verifier_frees_its_thread_slot_only_when_the_thread_is_done() -> None:
    gate = threading.Event()

    def held(hashed: str, password: str) -> bool:
        assert gate.wait(10)
        return passwords.verify_password(hashed, password)

    verifier = passwords.PasswordVerifier(workers=1, max_waiting=0, check=held)
    try:
        running = asyncio.create_task(verifier.verify(HELLO, "Hello world!"))
        deadline = asyncio.get_running_loop().time() + 10
        while not verifier._slots.locked():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        running.cancel()  # the waiter goes; the thread still runs the check
        with pytest.raises(asyncio.CancelledError):
            await running
        with pytest.raises(Overloaded):  # no one may wait (max_waiting=0) and the thread is busy
            await verifier.verify(HELLO, "Hello world!")
        gate.set()
        deadline = asyncio.get_running_loop().time() + 10
        while verifier._slots.locked():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        assert await verifier.verify(HELLO, "Hello world!")
        assert not await verifier.dummy_verify("Hello world!")
    finally:
        gate.set()
        verifier.close()
