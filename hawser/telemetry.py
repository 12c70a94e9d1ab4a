"""Logging and the operational routes every service exposes: health and Prometheus metrics.

Logs are one JSON object a line (structured, greppable, safe to ship); secrets never reach them
because nothing logs credentials or payloads in the first place.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """JSON lines when stderr is not a terminal (services), readable text on a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at ERROR while a broker is down; one line is enough.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
    # aiocoap logs every duplicate datagram and unmatched acknowledgement at INFO: a device's business.
    for name in ("coap-server", "coap-dtls-server"):
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))


ReadyCheck = Callable[[], Awaitable[bool]]


def operational_routes(ready: ReadyCheck | None = None) -> list[BaseRoute]:
    """`/health/live` (the process runs), `/health/ready` (its dependencies answer), `/metrics`."""

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readiness(request: Request) -> Response:
        ok = True if ready is None else await ready()
        return JSONResponse({"status": "ok" if ok else "unavailable"}, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", readiness, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
