"""Round trips: every packet type of both versions, from each sender, encodes and decodes to itself,
whole and split across reads at any points."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hawser.mqtt import Connect, Decoder, Packet, ProtocolVersion, Role, encode
from tests.mqtt.strategies import V5, V311, connects, packet_strategies

CASES = [
    (version, role, name)
    for version in (V311, V5)
    for role in Role
    for name in packet_strategies(version, role)
]


def test_every_packet_type_is_covered() -> None:
    names = {(v, r): {n for vv, rr, n in CASES if (vv, rr) == (v, r)} for v in (V311, V5) for r in Role}
    assert len(names[V311, Role.CLIENT]) == 10  # CONNECT PUBLISH PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE
    assert len(names[V311, Role.SERVER]) == 10  # UNSUBSCRIBE PINGREQ DISCONNECT / CONNACK ... PINGRESP
    assert names[V5, Role.CLIENT] == names[V311, Role.CLIENT] | {"AUTH"}
    assert names[V5, Role.SERVER] == names[V311, Role.SERVER] | {"AUTH"}


@pytest.mark.parametrize(("version", "role", "name"), CASES, ids=[f"{v.name}-{r.value}-{n}" for v, r, n in CASES])
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(version: ProtocolVersion, role: Role, name: str, data: st.DataObject) -> None:
    packet: Packet = data.draw(packet_strategies(version, role)[name])
    wire = encode(packet, version)
    decoder = Decoder(version, role=role)
    decoder.feed(wire)
    assert decoder.next_packet() == packet
    assert decoder.next_packet() is None
    assert decoder.buffered == 0


@pytest.mark.parametrize("version", [V311, V5])
@settings(max_examples=60)
@given(data=st.data())
def test_split_stream(version: ProtocolVersion, data: st.DataObject) -> None:
    """A server decoder learns the version from the CONNECT, and reads any split of the stream."""
    strategies = packet_strategies(version, Role.CLIENT)
    packets: list[Packet] = [data.draw(connects(version))]
    packets += data.draw(st.lists(st.one_of([s for n, s in strategies.items() if n != "CONNECT"]), max_size=6))
    wire = b"".join(encode(p, version) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    decoder = Decoder()
    assert Decoder().version is None
    got: list[Packet] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        decoder.feed(wire[start:end])
        assert decoder.buffered <= len(wire)
        while (packet := decoder.next_packet()) is not None:
            got.append(packet)
    assert got == packets
    assert decoder.version is version
    assert decoder.buffered == 0


def test_connect_is_written_in_its_own_version() -> None:
    packet = Connect("c", ProtocolVersion.V311)
    assert encode(packet, V5) == encode(packet, V311)
