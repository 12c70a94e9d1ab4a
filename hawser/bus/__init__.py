"""Event bus backends behind one protocol: Kafka for production, an embedded durable log for one
machine. `open_bus` picks one from the settings."""

from __future__ import annotations

from hawser.bus.base import Delivery, EventBus, Subscription
from hawser.bus.embedded import EmbeddedBus
from hawser.config import Settings


def open_bus(settings: Settings) -> EventBus:
    """The bus the settings name, not yet started (call `start()`, or use it with `async with`)."""
    bus = settings.bus
    if bus.kind == "kafka":
        from hawser.bus.kafka import KafkaBus  # aiokafka is loaded only when Kafka is used

        return KafkaBus(bus.kafka_bootstrap, partitions=bus.partitions,
                        replication_factor=bus.replication_factor, linger_ms=bus.linger_ms,
                        send_timeout_s=bus.send_timeout_s, client_id=f"hawser-{settings.instance}",
                        max_batch_bytes=bus.kafka_max_batch_bytes)
    return EmbeddedBus(settings.embedded_log_path(), partitions=bus.partitions,
                       send_timeout_s=bus.send_timeout_s)


__all__ = ["Delivery", "EmbeddedBus", "EventBus", "Subscription", "open_bus"]
