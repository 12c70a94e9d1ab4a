"""The capped HTTP request body reader every Hawser HTTP app shares (device endpoint, registry API).

A body is refused (PayloadTooLarge) from its declared Content-Length before any of it is read, and
again as soon as more than the limit has streamed in, so it is never buffered past the limit.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from hawser.errors import BadRequest, PayloadTooLarge


def header_values(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """Authorization, Content-Type and Content-Length of a device request, read once from the raw
    header list (cheaper than Starlette's header objects on the publish paths)."""
    authorization = content_type = content_length = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length":
            content_length = value.decode("latin-1")
    return authorization, content_type, content_length


def check_content_length(value: str | None, limit: int) -> None:
    """Refuse a declared body larger than `limit` before reading any of it (BadRequest when the
    header is not a whole number)."""
    if value is None:
        return
    if not value.isascii() or not value.isdigit():
        raise BadRequest("invalid Content-Length")
    size = int(value)
    if size > limit:
        raise PayloadTooLarge(size, limit)


async def receive_body(receive: Receive, limit: int) -> bytes | None:
    """The body from a raw ASGI `receive`, refused (PayloadTooLarge) as soon as more than `limit`
    bytes arrived; None if the client disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """`receive_body` for a Starlette request, refusing a declared Content-Length over `limit`
    before reading anything."""
    check_content_length(request.headers.get("content-length"), limit)
    body = await receive_body(request.receive, limit)
    if body is None:
        raise ClientDisconnect()
    return body


__all__ = ["check_content_length", "read_body", "receive_body"]
