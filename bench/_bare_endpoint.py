"""The reference of bench/http_publish.py: a bare Starlette endpoint that does only the aiokafka send
Hawser does (same producer settings, same uvicorn settings), with no auth and no CloudEvent.

Run as `python bench/_bare_endpoint.py BOOTSTRAP TOPIC PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def build(bootstrap: str, topic: str) -> Starlette:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)

    async def publish(request: Request) -> Response:
        body = await request.body()
        future = await producer.send(topic, body, key=b"bench-app/bench-device")
        await future
        return Response(status_code=202)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await producer.start()
        try:
            yield
        finally:
            await producer.stop()

    return Starlette(routes=[Route("/v1/{channel}", publish, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    bootstrap, topic, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = uvicorn.Config(build(bootstrap, topic), host="127.0.0.1", port=port, http="httptools",
                            log_level="warning", access_log=False, server_header=False)
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
