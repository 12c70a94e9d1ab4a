"""Serve an ASGI app with uvicorn on a socket bound to 127.0.0.1:0, for real-socket tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp


@asynccontextmanager
async def serve(
    app: ASGIApp, *, http: str = "auto", startup_timeout_s: float = 10.0
) -> AsyncIterator[str]:
    """Yields the base URL once uvicorn accepts connections; stops it (and waits) on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=http, lifespan="off", log_level="warning", ws="none", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + startup_timeout_s
    try:
        while not server.started:  # poll with a deadline: uvicorn has no readiness event
            if task.done():
                await task
                raise RuntimeError("uvicorn stopped before it started")
            if loop.time() > deadline:
                raise TimeoutError("uvicorn did not start")
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
