"""The reference of bench/coap_publish.py: a bare aiocoap resource that does only the aiokafka send
(plain aiokafka defaults, as bench/_bare_endpoint.py) and answers 2.04 once Kafka acknowledged, on
the same aiocoap transport (udp6) and event loop (uvloop) as Hawser, with no auth and no CloudEvent.

It sends the record Hawser would: the payload as value, a CloudEvent's worth of `ce_` headers built
once, and one key per benchmark device in turn (Hawser keys by device, so its records spread over
the topic's partitions; one key would hold the reference to one partition and one batch in flight).

Run as `python bench/_coap_bare.py BOOTSTRAP TOPIC DEVICES`; prints `PORT <n>` once it serves.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
import uvloop
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bare_endpoint import static_headers


class Publish(aiocoap.resource.Resource):  # type: ignore[misc]  # aiocoap has no types
    def __init__(self, producer: AIOKafkaProducer, topic: str, keys: list[bytes]) -> None:
        super().__init__()
        self.producer = producer
        self.topic = topic
        self.keys = itertools.cycle(keys)
        self.headers = static_headers()

    async def render_post(self, request: Any) -> Any:
        future = await self.producer.send(self.topic, request.payload, key=next(self.keys), headers=self.headers)
        await future
        return aiocoap.Message(code=aiocoap.CHANGED)


def bound_port(context: Any) -> int:
    """The UDP port a server context bound (aiocoap keeps it private)."""
    port: int = context.request_interfaces[0].token_interface.message_interface._local_port()
    return port


async def serve(bootstrap: str, topic: str, devices: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    keys = [f"bench-app/bench-device-{n}".encode() for n in range(devices)]
    site = aiocoap.resource.Site()
    site.add_resource(["v1", "telemetry"], Publish(producer, topic, keys))
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"PORT {bound_port(context)}", flush=True)
    try:
        await stop.wait()
    finally:
        await context.shutdown()
        await producer.stop()


def main() -> None:
    bootstrap, topic, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(bootstrap, topic, devices))


if __name__ == "__main__":
    main()
