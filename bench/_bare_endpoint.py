"""The reference of bench/http_publish.py: a bare Starlette endpoint that does only the aiokafka send
Hawser does (same producer settings, same uvicorn settings, same event loop), with no auth and no
CloudEvent.

Run as `python bench/_bare_endpoint.py BOOTSTRAP TOPIC PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import uvicorn
import uvloop
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(bootstrap: str, topic: str) -> Starlette:
    producers: list[AIOKafkaProducer] = []

    async def publish(request: Request) -> Response:
        body = await request.body()
        future = await producers[0].send(topic, body, key=b"bench-app/bench-device")
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
