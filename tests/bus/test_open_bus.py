"""`open_bus` builds the backend the settings name, unstarted, and both satisfy the protocols."""

from __future__ import annotations

from pathlib import Path

from hawser.bus import EmbeddedBus, EventBus, Subscription, open_bus
from hawser.bus.kafka import KafkaBus
from hawser.config import BusSettings, Settings
from tests.bus.test_contract import event, take


async def test_the_embedded_log_is_the_default_and_lives_under_the_data_dir(tmp_path: Path) -> None:
    bus = open_bus(Settings(data_dir=tmp_path))
    assert isinstance(bus, EmbeddedBus)
    assert isinstance(bus, EventBus)
    assert bus.path == tmp_path / "events.db"
    async with bus:
        await bus.ensure_topic("events-app")
        subscription = await bus.subscribe(["events-app"])
        async with subscription:
            assert isinstance(subscription, Subscription)
            sent = event(1)
            await bus.send("events-app", sent, "app/device-1")
            (got,) = await take(subscription, 1)
    assert got.event == sent
    assert (tmp_path / "events.db").exists()


def test_kafka_is_chosen_by_kind() -> None:
    settings = Settings(bus=BusSettings(kind="kafka", kafka_bootstrap="127.0.0.1:1", partitions=5))
    bus = open_bus(settings)
    assert isinstance(bus, KafkaBus)
    assert isinstance(bus, EventBus)
    assert bus.bootstrap == "127.0.0.1:1"
