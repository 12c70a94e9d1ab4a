"""Screening UDP datagrams before aiocoap decodes them, and the few aiocoap internals the CoAP
server needs (the bound port, the datagram hook, the render hook), each wrapped in one function
that refuses to start (RuntimeError) when the internal it relies on is gone.

aiocoap 0.4 decodes whatever arrives: a Uri-Path that is not UTF-8 raises out of its datagram
callback (a traceback in the log per datagram), a Content-Format of any length becomes a member of
an enum that is never freed, and a datagram over its 4 KiB receive buffer is decoded cut short (a
truncated body published as if whole). So the buffer holds any UDP datagram, and each datagram is
walked once here (pure, no allocation beyond slices) and dropped, counted, if it breaks RFC 7252's
framing or would be decoded into one of those. Every distinct option number and 2-byte content
format still becomes an enum member (RFC-valid, so let through): at most 2 x 65536 of them, about
300 bytes each (40 MB at worst, bounded). Dropped datagrams get no reply (as aiocoap treats
unparsable ones): no RST for a spoofed sender.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from aiocoap.pipe import error_to_message, run_driving_pipe
from prometheus_client import Counter

log = logging.getLogger(__name__)

DROPPED = Counter("hawser_coap_datagrams_dropped", "UDP datagrams dropped before decoding, by reason.", ["reason"])

#: Options aiocoap decodes as UTF-8 text (RFC 7252's `string` options).
_STRING_OPTIONS = frozenset({3, 8, 11, 15, 20, 35, 39})
#: Options whose value aiocoap turns into a ContentFormat enum member (Content-Format, Accept):
#: RFC 7252 gives them at most 2 bytes.
_FORMAT_OPTIONS = frozenset({12, 17})
_NON, _ACK, _RST = 1, 2, 3
#: Option numbers are 16 bits (RFC 7252 section 12.2).
MAX_OPTION_NUMBER = 0xFFFF
#: The receive buffer: any UDP datagram fits (a larger one would be read cut short, MSG_TRUNC).
MAX_DATAGRAM = 0xFFFF


def screen(data: bytes) -> str | None:
    """None if `data` may be handed to aiocoap, else the reason to drop it."""
    size = len(data)
    if size < 4:
        return "short"
    first = data[0]
    if first >> 6 != 1:
        return "version"
    token_length = first & 0x0F
    if token_length > 8:  # 9-15 are reserved: a message format error
        return "token"
    kind, code = first >> 4 & 0x03, data[1]
    if code == 0:
        # Empty: a CON ping or an ACK/RST, with nothing after the header (RFC 7252 section 4.1).
        return None if size == 4 and kind != _NON else "empty"
    if 1 <= code < 32:
        if kind >= _ACK:  # a request is CON or NON
            return "type"
    elif not 64 <= code < 192 or kind == _RST:  # classes 1, 6, 7 are reserved; a response never RST
        return "code"
    position = 4 + token_length
    if position > size:
        return "truncated"
    number = 0
    while position < size:
        head = data[position]
        if head == 0xFF:
            return None if position + 1 < size else "empty-payload"
        position += 1
        delta, length = head >> 4, head & 0x0F
        if delta == 15 or length == 15:
            return "reserved-nibble"
        if delta == 13:
            if position >= size:
                return "truncated"
            delta = data[position] + 13
            position += 1
        elif delta == 14:
            if position + 1 >= size:
                return "truncated"
            delta = (data[position] << 8 | data[position + 1]) + 269
            position += 2
        if length == 13:
            if position >= size:
                return "truncated"
            length = data[position] + 13
            position += 1
        elif length == 14:
            if position + 1 >= size:
                return "truncated"
            length = (data[position] << 8 | data[position + 1]) + 269
            position += 2
        number += delta
        end = position + length
        if end > size:
            return "truncated"
        if number > MAX_OPTION_NUMBER:
            return "option-number"
        if number in _STRING_OPTIONS:
            try:
                data[position:end].decode("utf-8")
            except UnicodeDecodeError:
                return "not-utf8"
        elif number in _FORMAT_OPTIONS and length > 2:
            return "content-format"
        position = end
    return None


def message_interface(context: Any) -> Any:
    """The UDP message interface of a server context made with `transports=["udp6"]` (aiocoap
    internals: a token interface around a message manager around it)."""
    return context.request_interfaces[0].token_interface.message_interface


def bound_port(context: Any) -> int:
    """The UDP port a server context is bound to (the real one when it was asked for port 0)."""
    return int(message_interface(context)._local_port())


def unacknowledged(context: Any) -> int:
    """Confirmable messages (separate responses) a server context sent and has not seen
    acknowledged, and those queued behind them: aiocoap sends one at a time per remote (NSTART 1),
    so the replies to a device's (or a NAT's) other requests wait for the first one's ACK, and
    its shutdown drops them all unsent."""
    manager = context.request_interfaces[0].token_interface
    active, backlogs = manager._active_exchanges, manager._backlogs
    if active is None:  # shut down already
        return 0
    if not isinstance(active, dict) or not isinstance(backlogs, dict):
        raise RuntimeError("aiocoap's message manager changed: its pending exchanges cannot be read")
    return len(active) + sum(len(queue) for queue in backlogs.values())


def install_screen(context: Any) -> None:
    """Route the context's incoming datagrams through `screen`, with a receive buffer any UDP
    datagram fits in (one that still arrives cut short is dropped). The transport looks the
    callback up on its protocol (the message interface) for every datagram, so an instance
    attribute takes effect at once and for that context only."""
    interface = message_interface(context)
    received = interface.datagram_msg_received
    transport = interface.transport
    if not isinstance(getattr(transport, "max_size", None), int):
        raise RuntimeError("aiocoap's recvmsg transport changed: its receive buffer size cannot be set")
    transport.max_size = MAX_DATAGRAM
    counters: dict[str, Any] = {}

    def screened(data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        reason = "cut-short" if flags & socket.MSG_TRUNC else screen(data)
        if reason is None:
            received(data, ancdata, flags, address)
            return
        counter = counters.get(reason)
        if counter is None:
            counter = counters[reason] = DROPPED.labels(reason)
        counter.inc()
        log.debug("dropped a CoAP datagram from %s: %s", address, reason)

    interface.datagram_msg_received = screened


async def refuse_shared_port(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE) when another socket holds UDP `port` on `host` already. aiocoap
    binds its server socket with SO_REUSEPORT, so a second server on the same port (another
    gateway, an old one still running) would start and silently take a share of the devices'
    datagrams; probing first with a plain bind makes it fail as every other listener does. Port 0
    (an ephemeral port) is never shared. The first address `host` resolves to is probed (aiocoap
    binds one too)."""
    if port == 0:
        return
    resolved = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, kind, proto, _, address = resolved[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, f"UDP port {port} on {host} is in use already") from None
            raise


class _Render:
    """One request's rendering as an awaitable that makes the site's coroutine only once awaited."""

    __slots__ = ("_pipe", "_site")

    def __init__(self, site: Any, pipe: Any) -> None:
        self._site = site
        self._pipe = pipe

    def __await__(self) -> Any:
        return self._site.render_to_pipe(self._pipe).__await__()


def install_lazy_render(context: Any) -> None:
    """Render the context's requests as aiocoap does (a task per request, errors turned into
    replies, the task cancelled when the requester loses interest), minus one defect: aiocoap makes
    the site's coroutine before the task runs, and when it cancels that task before its first step
    (an ICMP error or a retransmission timeout for the sender, a new request taking its token, all
    in the same loop iteration) the coroutine is left never awaited: a RuntimeWarning, and garbage
    kept until a GC cycle. Here the coroutine is made when the task first runs."""
    if not callable(getattr(type(context), "render_to_pipe", None)):
        raise RuntimeError("aiocoap's Context changed: it has no render_to_pipe to replace")
    site, aiocoap_log = context.serversite, context.log

    def render_to_pipe(pipe: Any) -> None:
        run_driving_pipe(error_to_message(pipe, aiocoap_log), _Render(site, pipe), name="CoAP request")

    context.render_to_pipe = render_to_pipe


__all__ = [
    "MAX_DATAGRAM",
    "MAX_OPTION_NUMBER",
    "bound_port",
    "install_lazy_render",
    "install_screen",
    "message_interface",
    "refuse_shared_port",
    "screen",
    "unacknowledged",
]
