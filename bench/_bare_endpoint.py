"""The reference of bench/http_publish.py: a bare Starlette endpoint that does only the aiokafka send
Hawser does (same producer settings, same uvicorn settings, same event loop), with no auth and no
CloudEvent work.

The record it sends is the same as Hawser's on the wire: same key, same value and a set of `ce_`
headers of the same size, built once at start. This matters: with small records a batch never fills
and every request waits the whole linger, so a reference sending bare payloads is latency-bound at
connections / linger and would make any gateway look faster than "doing nothing".

Run as `python bench/_bare_endpoint.py BOOTSTRAP TOPIC PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator

import uvicorn
import uvloop
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def static_headers() -> list[tuple[str, bytes]]:
    """CloudEvent headers shaped like Hawser's for the benchmark device (computed once)."""
    uid = str(uuid.uuid4())
    return [
        ("ce_specversion", b"1.0"), ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", b"drogue://bench-app/bench-device"), ("ce_type", b"io.drogue.event.v1"),
        ("ce_subject", b"telemetry"), ("ce_time", b"2026-01-01T00:00:00.000000Z"),
        ("content-type", b"application/json"), ("ce_application", b"bench-app"),
        ("ce_applicationuid", uid.encode()), ("ce_device", b"bench-device"), ("ce_deviceuid", uid.encode()),
        ("ce_sender", b"bench-device"), ("ce_senderuid", uid.encode()), ("ce_instance", b"bench-host"),
        ("ce_partitionkey", b"bench-app/bench-device"),
    ]


def build(bootstrap: str, topic: str) -> Starlette:
    producers: list[AIOKafkaProducer] = []
    headers = static_headers()

    async def publish(request: Request) -> Response:
        body = await request.body()
        future = await producers[0].send(topic, body, key=b"bench-app/bench-device", headers=headers)
        await future
        return Response(status_code=202)

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
        await producer.start()
        producers.append(producer)
        try:
            yield
        finally:
            await producer.stop()

    return Starlette(routes=[Route("/v1/{channel}", publish, methods=["POST"]), Route("/", health)],
                     lifespan=lifespan)


def main() -> None:
    bootstrap, topic, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = uvicorn.Config(build(bootstrap, topic), host="127.0.0.1", port=port, http="httptools", ws="none",
                            log_level="warning", access_log=False, server_header=False)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
