"""Optimistic concurrency holds under concurrent writers: of several updates naming the same
resourceVersion, exactly one wins and the others get StaleResourceVersion (no lost update)."""

from __future__ import annotations

import asyncio

from hawser.errors import StaleResourceVersion
from registry.documents import ApplicationDocument, DeviceDocument
from registry.store import RegistryStore


async def test_one_writer_wins(store: RegistryStore) -> None:
    await store.create_application(ApplicationDocument.model_validate({"metadata": {"name": "app"}}))
    created = await store.create_device("app", DeviceDocument.model_validate({"metadata": {"name": "d"}}))
    version = created.metadata.resource_version

    async def update(i: int) -> str:
        doc = DeviceDocument.model_validate(
            {"metadata": {"name": "d", "resourceVersion": version, "labels": {"writer": str(i)}}})
        try:
            await store.update_device("app", doc)
        except StaleResourceVersion:
            return "stale"
        return "won"

    results = await asyncio.gather(*(update(i) for i in range(8)))
    assert sorted(results) == ["stale"] * 7 + ["won"]
    final = await store.get_device("app", "d")
    assert final.metadata.generation == 2
