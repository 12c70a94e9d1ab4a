"""End-to-end latency: a device's publish until an application receives the event, on two paths.

- HTTP: publishes at a fixed rate (default 1,000 msg/s for 20 s) over keep-alive HTTP connections,
  received by one WebSocket subscriber on the API port.
- MQTT: devices publish QoS 1 over MQTT 3.1.1 (8 connections, one device each) at a fixed rate
  (default 2,000 msg/s for 20 s), received by an application subscribed to `app/<app>` through the
  MQTT integration (MQTT 5, access token as the user name), which PUBACKs every event.

Both go into one Hawser process on a real Kafka; latency is receive time minus send time, on one
clock. The reference, measured in the same run at each path's rate, is the bus alone: aiokafka
producer to aiokafka consumer, sending records shaped like Hawser's (same keys, a CloudEvent's worth
of headers). Target: Hawser p99 < 50 ms on both paths.

    .venv/bin/python bench/e2e_latency.py [--rate 1000] [--mqtt-rate 2000] [--seconds 20] [--paths http,mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
from _bare_endpoint import static_headers
from _mqtt_latency import MqttDevices, Subscriber

MQTT_DEVICES = 8

Send = Callable[[int, bytes], Coroutine[Any, Any, None]]
#: Latencies (s) of the events received, the publishers' acknowledgement times (s), failed publishes.
Run = tuple[list[float], list[float], int]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced(rate: int, seconds: int, send: Send, sent_at: dict[int, float]) -> None:
    """Start one send every 1/rate seconds (bounded: rate*seconds sends), without waiting for the
    previous ones: a slow reply must not slow the offered load (no coordinated omission)."""
    total = rate * seconds
    start = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    for seq in range(total):
        target = start + seq / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[seq] = time.perf_counter()
        task = asyncio.create_task(send(seq, json.dumps({"seq": seq, "temp": 21.5}).encode()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)


class HttpPool:
    """Keep-alive HTTP/1.1 connections written by hand: a Python HTTP client would be the bottleneck."""

    def __init__(self, port: int, size: int, authorization: str) -> None:
        self.port, self.size, self.authorization = port, size, authorization
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue(size)
        self.failures = 0
        #: Seconds from starting a request until its 202, per request: the device's view.
        self.acks: list[float] = []

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    async def post(self, seq: int, body: bytes) -> None:
        started = time.perf_counter()
        reader, writer = await self.idle.get()
        try:
            writer.write(
                b"POST /v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Authorization: {self.authorization}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            if b" 202 " not in status:
                self.failures += 1
            self.acks.append(time.perf_counter() - started)
        finally:
            self.idle.put_nowait((reader, writer))

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()


async def through_hawser(gw: h.Hawser, rate: int, seconds: int) -> Run:
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    total = rate * seconds
    url = f"ws://127.0.0.1:{gw.api_port}/api/integration/v1/apps/{h.APP}/events?token={h.TOKEN}"
    pool = HttpPool(gw.http_port, 64, h.basic_auth())
    await pool.open()
    async with websockets.connect(url, max_queue=None) as ws:

        async def receive() -> None:
            async for frame in ws:
                seq = json.loads(frame)["data"]["seq"]
                latencies.append(time.perf_counter() - sent_at[seq])
                if len(latencies) >= total - pool.failures:
                    return

        receiver = asyncio.create_task(receive())
        await paced(rate, seconds, pool.post, sent_at)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver, timeout=30)
    await pool.close()
    return latencies, pool.acks, pool.failures


async def through_mqtt(gw: h.Hawser, devices: list[str], rate: int, seconds: int) -> Run:
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    seen: set[int] = set()
    probe_seen = asyncio.Event()
    total = rate * seconds
    done = asyncio.get_running_loop().create_future()
    publishers = MqttDevices(gw.mqtt_port, [(f"e2e-{name}", f"{name}@{h.APP}", h.PASSWORD) for name in devices])

    def on_payload(payload: bytes) -> None:
        data = json.loads(payload)
        if "probe" in data:
            probe_seen.set()
        elif "seq" in data and data["seq"] not in seen:  # QoS 1 is at least once: count each event once
            seen.add(data["seq"])
            latencies.append(time.perf_counter() - sent_at[data["seq"]])
            if len(latencies) >= total - publishers.failures and not done.done():
                done.set_result(None)
        # anything else is a connection event ({"connected": ...}) of the devices

    loop = asyncio.get_running_loop()
    _, subscriber = await loop.create_connection(lambda: Subscriber(h.TOKEN, f"app/{h.APP}", on_payload),
                                                 "127.0.0.1", gw.mqtt_integration_port)
    try:
        await subscriber.subscribe()
        await publishers.open()
        # The subscription reads the topic from its end once the consumer joined: probe until an event
        # published now arrives (bounded), so that the measured run starts with a live subscription.
        async with asyncio.timeout(60):
            for probe in itertools.count():
                await publishers.publish(0, json.dumps({"probe": probe}).encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(probe_seen.wait(), 0.5)
                if probe_seen.is_set():
                    break
        publishers.acks.clear()
        await paced(rate, seconds, publishers.publish, sent_at)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, timeout=30)
    finally:
        publishers.close()
        subscriber.close()
    return latencies, publishers.acks, publishers.failures


async def through_kafka_alone(bootstrap: str, rate: int, seconds: int, devices: int) -> list[float]:
    """The same records as Hawser writes (a CloudEvent's worth of `ce_` headers, one key per device,
    message n from device n % devices): record size decides how soon a producer batch fills."""
    topic = f"bench-e2e-reference-{devices}-{rate}"
    headers = static_headers()
    keys = [f"{h.APP}/{name}".encode() for name in ([h.DEVICE] + [f"{h.DEVICE}-{n}" for n in range(1, devices)])]
    await asyncio.to_thread(h.create_topic, bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    await producer.start()
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    await consumer.seek_to_end()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    total = rate * seconds

    async def send(seq: int, body: bytes) -> None:
        await (await producer.send(topic, body, key=keys[seq % devices], headers=headers))

    async def receive() -> None:
        async for record in consumer:
            latencies.append(time.perf_counter() - sent_at[json.loads(record.value)["seq"]])
            if len(latencies) >= total:
                return

    receiver = asyncio.create_task(receive())
    try:
        await paced(rate, seconds, send, sent_at)
        await asyncio.wait_for(receiver, timeout=30)
    finally:
        receiver.cancel()
        await consumer.stop()
        await producer.stop()
    return latencies


def report(name: str, latencies: list[float], expected: int) -> float:
    ms = [1000 * x for x in latencies]
    p99 = percentile(ms, 0.99)
    print(f"{name:32}{len(ms):>8}/{expected:<8}{statistics.median(ms):>9.2f}{p99:>9.2f}{max(ms):>9.2f}")
    return p99


def summarise(title: str, rate: int, seconds: int, path: str, ack: str,
              run: Run, reference: list[float]) -> bool:
    """Prints one path's table; False when publishes failed or events are missing."""
    latencies, acks, failures = run
    expected = rate * seconds
    print(f"{title}: {rate} msg/s for {seconds} s; latency in ms")
    print(f"{'path':32}{'received':>17}{'p50':>9}{'p99':>9}{'max':>9}")
    p99 = report(path, latencies, expected)
    report(f"  of which {ack}", acks, expected)
    ref = report("aiokafka -> aiokafka (ref)", reference, expected)
    print(f"p99 hawser/reference: {p99 / ref:.1f}x   hawser p99 {p99:.1f} ms (target < 50 ms)")
    if failures or len(latencies) < expected:
        print(f"WARNING: {failures} publishes failed, {expected - len(latencies)} events missing")
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="HTTP path, msg/s")
    parser.add_argument("--mqtt-rate", type=int, default=2000, help="MQTT path, msg/s")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--paths", default="http,mqtt", help="comma-separated: http, mqtt")
    args = parser.parse_args()
    paths = set(args.paths.split(","))
    if not paths or paths - {"http", "mqtt"}:
        parser.error("--paths takes http, mqtt or both")
    with h.kafka() as bootstrap:
        references = {
            path: asyncio.run(through_kafka_alone(bootstrap, rate, args.seconds, devices))
            for path, rate, devices in (("http", args.rate, 1), ("mqtt", args.mqtt_rate, MQTT_DEVICES))
            if path in paths
        }
        http_run: Run = ([], [], 0)
        mqtt_run: Run = ([], [], 0)
        with h.hawser(bootstrap) as gw:
            devices = h.provision_device(gw, extra_devices=MQTT_DEVICES - 1)
            if "http" in paths:
                http_run = asyncio.run(through_hawser(gw, args.rate, args.seconds))
            if "mqtt" in paths:
                mqtt_run = asyncio.run(through_mqtt(gw, devices, args.mqtt_rate, args.seconds))
    ok = True
    if "http" in paths:
        ok &= summarise("HTTP", args.rate, args.seconds, "HTTP -> Hawser -> WebSocket", "HTTP 202 ack", http_run,
                        references["http"])
    if "mqtt" in paths:
        ok &= summarise(f"MQTT (QoS 1, {MQTT_DEVICES} device connections)", args.mqtt_rate, args.seconds,
                        "MQTT -> Hawser -> MQTT integration", "MQTT PUBACK", mqtt_run, references["mqtt"])
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
