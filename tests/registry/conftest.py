"""Fixtures of the registry tests: a store on SQLite (a temporary file) and on PostgreSQL (a fresh
database from the session's server), and cheap Argon2 parameters so tests do not pay the real cost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hawser import passwords
from registry.store import RegistryStore

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", passwords._hasher)  # restored after the test
    passwords.configure(passwords.KdfCost(time_cost=1, memory_kib=8, parallelism=1))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[RegistryStore]:
    opened = await RegistryStore.open(db_url)
    try:
        yield opened
    finally:
        await opened.aclose()
