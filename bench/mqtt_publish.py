"""MQTT publish throughput: Hawser's device endpoint against Mosquitto and amqtt's broker.

The same load goes into each: QoS 1 publishes of a 44-byte JSON document from concurrent MQTT 3.1.1
connections, each keeping a fixed window of publishes in flight. Hawser authenticates every
connection as its own device and acknowledges a publish only once Kafka holds the CloudEvent;
Mosquitto (plain listener, anonymous, no persistence) and amqtt's broker (anonymous, on uvloop) have
no subscribers, so they only parse and acknowledge. Rounds alternate between the three so that drift
of the machine hits all alike. Prints msg/s, the ratios, each server's CPU-seconds per 1,000 messages,
and checks that every publish got its PUBACK and, for Hawser, that every acknowledged event is in Kafka.

The load generator is a raw pipelined client (bench/_mqtt_load.py), not paho-mqtt: paho spends tens
of microseconds per message in Python and would measure itself against Mosquitto. paho-mqtt still
checks each broker first (one QoS 1 publish), and a short single-paho-client rate is printed for scale.

    .venv/bin/python bench/mqtt_publish.py [--seconds 10] [--rounds 2] [--connections 16] [--window 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _mqtt_brokers as brokers
import _mqtt_load as load

EVENT_TYPE = b"io.drogue.event.v1"


@dataclass
class Subject:
    name: str
    port: int
    pid: int
    clients: list[load.Client]
    runs: list[load.LoadResult] = field(default_factory=list)
    server_cpu: float = 0.0
    bus_cpu: float = 0.0
    paho_rate: float = 0.0
    acked_total: int = 0  # every PUBACK this server gave, warm-up and checks included

    @property
    def rate(self) -> float:
        return sum(r.rate for r in self.runs) / len(self.runs)

    @property
    def acked(self) -> int:
        return sum(r.acked for r in self.runs)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)


def measure(subject: Subject, *, window: int, seconds: float, processes: int, bus_pid: int | None) -> None:
    marks: dict[str, float] = {}

    def on_start() -> None:
        marks["server"] = h.cpu_seconds(subject.pid)
        marks["bus"] = h.cpu_seconds(bus_pid) if bus_pid else 0.0

    result = load.run_load(subject.port, subject.clients, window=window, seconds=seconds, processes=processes,
                           on_start=on_start)
    subject.server_cpu += h.cpu_seconds(subject.pid) - marks["server"]
    if bus_pid:
        subject.bus_cpu += h.cpu_seconds(bus_pid) - marks["bus"]
    subject.runs.append(result)
    subject.acked_total += result.acked
    if result.failed_connections or result.refused or result.acked != result.sent:
        raise SystemExit(f"{subject.name}: {result.failed_connections} connections failed "
                         f"{result.connect_failures or ''}, {result.refused} "
                         f"refused, {result.sent - result.acked} publishes without PUBACK")


async def count_events(bootstrap: str, topic: str) -> int:
    """Device events (not connection events) in `topic`, read from the start up to its end offsets."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)  # records read here are read again after the seek
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        events = 0
        async with asyncio.timeout(120):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batches.values():
                    for record in records:
                        if ("ce_type", EVENT_TYPE) in record.headers:
                            events += 1
        return events
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--window", type=int, default=32, help="QoS 1 publishes in flight per connection")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--paho-seconds", type=float, default=3, help="single paho client run per broker; 0: skip")
    args = parser.parse_args()
    h.raise_nofile()
    load_before = os.getloadavg()[0]

    with h.kafka() as bootstrap, brokers.mosquitto() as mosq, brokers.amqtt() as amq, h.hawser(bootstrap) as gw:
        devices = h.provision_device(gw, extra_devices=args.connections - 1)
        subjects = [
            Subject("hawser (Kafka)", gw.mqtt_port, gw.pid,
                    [load.Client(f"bench-{n}", f"{name}@{h.APP}", h.PASSWORD) for n, name in enumerate(devices)]),
            Subject("mosquitto", mosq.port, mosq.pid, [load.Client(f"bench-{n}") for n in range(args.connections)]),
            Subject("amqtt broker", amq.port, amq.pid, [load.Client(f"bench-{n}") for n in range(args.connections)]),
        ]
        hawser_subject = subjects[0]
        kafka_pid = h.listener_pid(int(bootstrap.rsplit(":", 1)[1]))
        for subject in subjects:
            user, password = (f"{h.DEVICE}@{h.APP}", h.PASSWORD) if subject is hawser_subject else ("", "")
            if brokers.paho_publish(subject.port, client_id="paho-check", username=user, password=password) != 1:
                raise SystemExit(f"{subject.name}: paho-mqtt's QoS 1 publish got no PUBACK")
            subject.acked_total += 1
            if args.paho_seconds:
                acked = brokers.paho_publish(subject.port, client_id="paho-rate", username=user, password=password,
                                             seconds=args.paho_seconds)
                subject.paho_rate = acked / args.paho_seconds
                subject.acked_total += acked
            # Warm-up: caches, Kafka producer ids, the broker's allocator.
            warm = load.run_load(subject.port, subject.clients, window=args.window, seconds=2,
                                 processes=args.processes)
            subject.acked_total += warm.acked
        for _ in range(args.rounds):
            for subject in subjects:
                measure(subject, window=args.window, seconds=args.seconds, processes=args.processes,
                        bus_pid=kafka_pid if subject is hawser_subject else None)
        in_kafka = asyncio.run(count_events(bootstrap, f"events-{h.APP}"))

    print(f"machine: {os.cpu_count()} cores; {args.connections} MQTT 3.1.1 connections x {args.window} QoS 1 "
          f"publishes in flight, {len(load.PAYLOAD)}-byte JSON; {args.processes} load process(es); "
          f"{args.rounds} rounds x {args.seconds:g} s per server, alternating; load average before: {load_before:.2f}")
    print("load: a raw pipelined client (pre-encoded PUBLISH packets, one write per read of PUBACKs), as a client "
          "library would measure itself (see one paho-mqtt client's rate in the last column); paho-mqtt's QoS 1 "
          "publish was acknowledged by each server before the load")
    print(f"{'server':16}{'msg/s':>10}{'CPU-s/1000':>12}{'server CPU':>12}{'load CPU':>10}{'paho 1 client':>15}")
    for s in subjects:
        load_cpu = sum(r.generator_cpu_s for r in s.runs)
        print(f"{s.name:16}{s.rate:>10.0f}{1000 * s.server_cpu / s.acked:>12.4f}{s.server_cpu / s.seconds:>11.0%}"
              f"{load_cpu / s.seconds:>10.0%}{s.paho_rate:>15.0f}")
    hawser, mosquitto, amqtt = subjects
    print(f"ratio hawser/mosquitto: {hawser.rate / mosquitto.rate:.2f}   (target >= 0.30)")
    print(f"ratio hawser/amqtt:     {hawser.rate / amqtt.rate:.2f}   (target >= 2.00)")
    if kafka_pid:
        print(f"Kafka broker CPU while Hawser ran: {1000 * hawser.bus_cpu / hawser.acked:.4f} CPU-s per 1,000 "
              f"messages ({hawser.bus_cpu / hawser.seconds:.0%} of a core)")
    print(f"every publish got its PUBACK; device events in Kafka: {in_kafka} for {hawser.acked_total} "
          "PUBACKs from Hawser")
    if in_kafka != hawser.acked_total:
        print("WARNING: Kafka does not hold exactly the acknowledged events; the figures above are not valid")
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
