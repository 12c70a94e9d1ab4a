"""The grouped LRU with maximum age, driven by a hand-held clock."""

from __future__ import annotations

from auth._cache import GroupedTtlLru


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hit_then_expiry() -> None:
    clock = Clock()
    cache: GroupedTtlLru[str, int] = GroupedTtlLru(10, 5.0, clock)
    cache.put("k", "a", "d", 1)
    assert cache.get("k") == 1
    clock.now += 4.9
    assert cache.get("k") == 1
    clock.now += 0.2
    assert cache.get("k") is None
    assert len(cache) == 0


def test_least_recently_used_goes_first() -> None:
    cache: GroupedTtlLru[str, int] = GroupedTtlLru(2, 60.0, Clock())
    cache.put("a", "app", "d1", 1)
    cache.put("b", "app", "d2", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", "app", "d3", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    assert len(cache) == 2


def test_drop_device_and_application() -> None:
    cache: GroupedTtlLru[str, int] = GroupedTtlLru(10, 60.0, Clock())
    cache.put("a1", "app", "d1", 1)
    cache.put("a2", "app", "d1", 2)
    cache.put("b", "app", "d2", 3)
    cache.put("c", "other", "d1", 4)
    cache.drop_device("app", "d1")
    assert (cache.get("a1"), cache.get("a2"), cache.get("b"), cache.get("c")) == (None, None, 3, 4)
    cache.drop_application("app")
    assert (cache.get("b"), cache.get("c")) == (None, 4)
    cache.drop_device("nowhere", "x")
    cache.drop_application("nowhere")
    assert len(cache) == 1


def test_eviction_keeps_groups_consistent() -> None:
    cache: GroupedTtlLru[str, int] = GroupedTtlLru(1, 60.0, Clock())
    cache.put("a", "app", "d1", 1)
    cache.put("b", "app", "d2", 2)  # evicts "a"
    cache.put("a", "app", "d1", 5)  # evicts "b"
    cache.drop_device("app", "d2")  # nothing left under d2
    assert cache.get("a") == 5
    cache.drop_device("app", "d1")
    assert len(cache) == 0


def test_disabled_by_zero_size_or_age() -> None:
    for size, ttl in ((0, 60.0), (10, 0.0)):
        cache: GroupedTtlLru[str, int] = GroupedTtlLru(size, ttl, Clock())
        cache.put("k", "a", "d", 1)
        assert cache.get("k") is None
