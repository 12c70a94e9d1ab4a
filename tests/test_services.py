"""The session fixtures give real, working services: Kafka takes topics, records and a restart; PostgreSQL
takes connections and queries in a fresh database per test. Also the small test helpers themselves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from services import KafkaServer, PostgresServer, kafka_ready
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers import eventually, free_port, unique_name


async def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, value: bytes) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=b"dev", headers=[("ce_id", b"1")])
        return int(meta.partition)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, partition: int, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(values) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                assert record.key == b"dev"
                assert ("ce_id", b"1") in list(record.headers)
                values.append(record.value)
        return values
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_kafka_takes_a_topic_and_a_record(kafka_bootstrap: str) -> None:
    topic = unique_name("svc")
    await create_topic(kafka_bootstrap, topic)
    partition = await produce(kafka_bootstrap, topic, b"hello")
    assert await read_all(kafka_bootstrap, topic, partition, 1) == [b"hello"]


@pytest.mark.kafka
async def test_kafka_runs_with_the_settings_hawser_relies_on(kafka: KafkaServer) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for resource in response.resources for entry in resource[4]}
    assert entries["auto.create.topics.enable"] == "false"
    assert entries["num.partitions"] == "3"
    assert entries["offsets.topic.replication.factor"] == "1"
    assert entries["group.initial.rebalance.delay.ms"] == "0"


@pytest.mark.kafka
async def test_kafka_restarts_on_the_same_port_with_its_topics(kafka: KafkaServer) -> None:
    topic = unique_name("restart")
    await create_topic(kafka.bootstrap, topic, partitions=1)
    await produce(kafka.bootstrap, topic, b"before")
    port = kafka.port
    try:
        kafka.stop()
        assert not kafka.running
        assert not kafka_ready(port)
        kafka.stop()  # idempotent
    finally:
        kafka.start()
    kafka.start()  # idempotent
    assert kafka.port == port
    assert kafka.bootstrap == f"127.0.0.1:{port}"
    await produce(kafka.bootstrap, topic, b"after")
    assert await read_all(kafka.bootstrap, topic, 0, 2) == [b"before", b"after"]


@pytest.mark.postgres
async def test_postgres_url_is_a_fresh_empty_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            tables = await conn.scalar(
                text("select count(*) from information_schema.tables where table_schema = 'public'")
            )
            assert tables == 0
            await conn.execute(text("create table t (id int primary key, name text not null)"))
            await conn.execute(text("insert into t values (1, 'one'), (2, 'two')"))
        async with engine.connect() as conn:
            rows = (await conn.execute(text("select name from t order by id"))).scalars().all()
        assert rows == ["one", "two"]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_each_test_gets_its_own_database(postgres: PostgresServer, postgres_url: str) -> None:
    other = postgres.create_database()
    assert other != postgres_url
    conn = await asyncpg.connect(postgres.dsn)
    try:
        names = {row["datname"] for row in await conn.fetch("select datname from pg_database")}
        assert {postgres_url.rsplit("/", 1)[1], other.rsplit("/", 1)[1]} <= names
        assert await conn.fetchval("show fsync") == "off"
    finally:
        await conn.close()


def test_postgres_server_restarts_with_its_data() -> None:
    with PostgresServer() as server:
        url = server.create_database("kept")
        server.stop()
        server.stop()
        server.start()
        assert server.url("kept") == url
        server.drop_database("kept")
    assert not server.running
    assert not server.workdir.exists()


async def test_eventually_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    async def grows() -> list[int]:
        calls.append(1)
        return calls if len(calls) >= 3 else []

    assert await eventually(grows, timeout=5) == [1, 1, 1]


async def test_eventually_fails_at_the_deadline_with_the_last_assertion() -> None:
    def never() -> None:
        raise AssertionError("still waiting")

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"not true within 0\.2s") as caught:
        await eventually(never, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert isinstance(caught.value.__cause__, AssertionError)


async def test_free_port_can_be_bound() -> None:
    port = free_port()
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    try:
        assert server.sockets[0].getsockname()[1] == port
    finally:
        server.close()
        await server.wait_closed()
    assert not kafka_ready(port)


LEAKY = """
import asyncio

async def test_leaves_a_task_running():
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten")

async def test_cleans_up():
    task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
    await task
"""


def test_a_test_that_leaves_a_task_running_fails(pytester: pytest.Pytester) -> None:
    root = Path(__file__).resolve().parent.parent
    pytester.makeconftest("pytest_plugins = ['tests.conftest']")
    pytester.makepyfile(test_leaky=LEAKY)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\n"
        "asyncio_default_test_loop_scope = session\n"
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", str(root))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test left 1 asyncio task(s) running*forgotten*"])
