"""The CoAP deduplication table: pure tests of its expiry and its cap. The real-socket behaviour
(a retransmitted CON answered again, one event) is in test_coap_fuzz.py, through the installed table."""

from __future__ import annotations

from endpoints._coap_dedup import Deduplicator


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def key(mid: int, port: int = 5000) -> tuple[str, int, bytes]:
    return ("::ffff:127.0.0.1", port, mid.to_bytes(2, "big"))


def test_a_new_request_is_remembered_and_its_ack_kept() -> None:
    table = Deduplicator(max_entries=10, clock=Clock())
    assert table.seen(key(1)) == (False, None)
    assert table.seen(key(1)) == (True, None), "a copy while the first is handled: dropped"
    table.sent(key(1), b"ack-1")
    table.sent(key(1), b"a later ack")  # the first ACK is the answer (a separate response follows it)
    assert table.seen(key(1)) == (True, b"ack-1")
    assert table.seen(key(1, port=5001)) == (False, None), "another sender, another request"


def test_an_ack_for_a_request_never_seen_is_not_kept() -> None:
    table = Deduplicator(max_entries=10, clock=Clock())
    table.sent(key(9), b"ack")
    assert len(table) == 0


def test_entries_expire_after_the_exchange_lifetime() -> None:
    clock = Clock()
    table = Deduplicator(max_entries=10, lifetime_s=247.0, clock=clock)
    table.seen(key(1))
    clock.now = 246.0
    table.seen(key(2))
    assert table.seen(key(1))[0]
    clock.now = 247.5
    table.seen(key(3))  # expiry runs as requests arrive, no timers
    assert len(table) == 2
    assert table.seen(key(1)) == (False, None), "expired: a new request"


def test_the_table_is_capped_oldest_first() -> None:
    table = Deduplicator(max_entries=100, clock=Clock())
    for mid in range(1_000):
        table.seen(key(mid))
    assert len(table) == 100
    assert table.seen(key(999))[0]
    assert not table.seen(key(0))[0]
