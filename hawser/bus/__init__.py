"""Event bus backends behind one protocol: Kafka for production, an embedded durable log for one
machine. `open_bus` picks one from the settings."""

from __future__ import annotations

from hawser.bus.base import Delivery, EventBus, Subscription

__all__ = ["Delivery", "EventBus", "Subscription"]
