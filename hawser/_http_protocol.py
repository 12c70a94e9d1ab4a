"""uvicorn's httptools protocol with a bound on the request head (request line plus headers).

httptools buffers a header value until it is complete and uvicorn sets no limit, so one client could
make the server hold an arbitrarily large header before any authentication runs. Here the bytes of an
unfinished head are counted as they arrive; past `MAX_HEAD_BYTES` the client gets a 431 problem and
the connection is closed. Memory per connection stays within the limit plus one read.

The close lingers (as nginx's `lingering_close`): closing a socket with unread input makes the kernel
send a reset, which can destroy the 431 before the client reads it; so the write side is shut first
and whatever still arrives is dropped unread for a moment.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: Seconds a refused connection keeps dropping input before it is closed.
LINGER_SECONDS = 1.0

#: Room for a long bearer token (OIDC JWTs run to a few KiB) and the usual headers, with margin.
MAX_HEAD_BYTES = 32 * 1024

_BODY = json.dumps(
    {"type": "https://hawser.dev/problems/header-too-large", "title": "Request Header Fields Too Large",
     "status": 431, "detail": f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"},
    separators=(",", ":"),
).encode()
_RESPONSE = (
    STATUS_LINE[431]
    + b"content-type: application/problem+json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\nconnection: close\r\n\r\n"
    + _BODY
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True
    _head_bytes = 0
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()
                return
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _refuse(self) -> None:
        self.logger.info("refused a request head over %d bytes", MAX_HEAD_BYTES)
        self._refused = True
        self.transport.write(_RESPONSE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
