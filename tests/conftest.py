"""Session fixtures for the real services (Kafka, PostgreSQL) and the suite's hygiene checks.

Servers start lazily, the first time a test asks for them, once per session, and are torn down at the
end; missing jars or binaries are provisioned first by scripts/provision.sh, so `pytest` alone works.
Every test also fails if it leaves asyncio tasks running (mark `allow_task_leaks` to opt out, and say why).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from _service_base import Server
from services import KafkaServer, PostgresServer, ServiceError

S = TypeVar("S", bound=Server)

pytest_plugins = ["pytester"]

#: How long tasks a test started get to finish after it (and its fixtures) ended.
TASK_GRACE_S = 2.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_task_leaks: the test may leave asyncio tasks running (say why in the test)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real service, so `-m "not kafka"` deselects it even if unmarked."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"kafka", "kafka_bootstrap"}:
            item.add_marker(pytest.mark.kafka)
        if names & {"postgres", "postgres_url"}:
            item.add_marker(pytest.mark.postgres)


def _started(make: Callable[[], S]) -> S:
    """Start a service; if the first start fails, say why (its log's tail, on the real stderr so CI
    shows it) and try once more on fresh ports, so one unlucky start does not fail the session."""
    server = make()
    try:
        server.start()
    except ServiceError as first:
        server.close()
        print(f"first start of {server.name} failed, retrying on fresh ports: {first}", file=sys.__stderr__)
        server = make()
        server.start()
    return server


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    """A real single-node Kafka broker; `.stop()`/`.start()` restart it on the same port with its data."""
    server = _started(KafkaServer)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka: KafkaServer) -> str:
    """`127.0.0.1:PORT` of the session's broker (started again if a test left it stopped)."""
    kafka.start()
    return kafka.bootstrap


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real throwaway PostgreSQL server (user `postgres`, trust auth on 127.0.0.1)."""
    server = _started(PostgresServer)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database for this test: `postgresql+asyncpg://postgres@127.0.0.1:PORT/NAME`."""
    postgres.start()
    return postgres.create_database()


@pytest.fixture(autouse=True)
def _restart_stopped_services(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stopped a session server (bus-down tests) and failed before restarting it does not
    take the rest of the suite down with it: the server is started again after the test."""
    yield
    for name in ("kafka", "postgres"):
        if name in request.fixturenames:
            server = request.getfixturevalue(name)
            if isinstance(server, KafkaServer | PostgresServer) and not server.running:
                server.start()


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running after it and its function fixtures are done."""
    before = asyncio.all_tasks()
    yield
    if request.node.get_closest_marker("allow_task_leaks"):
        return
    current = asyncio.current_task()
    deadline = time.monotonic() + TASK_GRACE_S
    while True:
        leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not leaked or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.01)
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(f"{t.get_name()} ({t.get_coro()!r})" for t in leaked)
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running (now cancelled): {names}")
