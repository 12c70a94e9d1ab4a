"""The CoAP device endpoint (UDP 5683, DTLS 5684), as Drogue serves it: `POST /v1/<channel>[/<device>]`
with credentials in option 4209 (or the device a DTLS pre-shared key proved), replying 2.04 once
the bus holds the event, or 2.05 with a command (its name in option 4210) when one arrives within
`ct` seconds.

A thin transport around `endpoints._coap_request` (options → credentials and uplink; errors →
replies, in one table) and the ingest pipeline. The site answers every request itself (no aiocoap
`Site`, no per-request copies): message deduplication stays aiocoap's (a retransmitted CON or NON,
same message id from the same address within EXCHANGE_LIFETIME, is answered from its cache or
dropped, never rendered twice); Block1 reassembly is Hawser's bounded `BlockSpool`, fed only after
the block's own credentials were checked (every block carries option 4209, as RFC 7959 repeats a
request's options in each block and as Drogue's and aiocoap's clients send them), so that an
unauthenticated sender never gets a byte buffered. Command waits are bounded per device and in
all (each holds its request); shutdown lets the devices acknowledge the last separate responses
before the contexts close. Anything that is not a `HawserError` is a bug: logged with its
traceback, answered 5.00.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.interfaces
from aiocoap import Message
from aiocoap.blockwise import Block2Cache, IncompleteException
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import OpaqueOption
from prometheus_client import Counter

from auth.devices import AuthOutcome, DeviceAuthenticator
from auth.psk import PskIdentity, PskKeys
from command.sessions import Command, DeviceSessions
from command.waiter import wait_for_command
from endpoints._coap_blocks import BlockSpool, IncompleteBody
from endpoints._coap_datagram import (
    bound_port,
    install_lazy_render,
    install_screen,
    refuse_shared_port,
    unacknowledged,
)
from endpoints._coap_dedup import install_deduplication
from endpoints._coap_request import (
    COMMAND_OPTION,
    ShuttingDown,
    content_format,
    error_reply,
    internal_error_reply,
    publish_parameters,
    read_request,
)
from endpoints.ingest import Ingest
from hawser.config import CoapEndpointSettings
from hawser.errors import BadRequest, HawserError, PayloadTooLarge

log = logging.getLogger(__name__)

REPLIES = Counter("hawser_coap_endpoint_replies", "Replies of the CoAP device endpoint, by code.", ["code"])
_REPLY_COUNTERS: dict[int, Any] = {}


def _count(reply: Any) -> Any:
    counter = _REPLY_COUNTERS.get(reply.code)
    if counter is None:
        counter = _REPLY_COUNTERS[reply.code] = REPLIES.labels(reply.code.dotted)
    counter.inc()
    return reply


#: Command waits (`ct`) held at once per device (the one that authenticated), and in all.
MAX_WAITS_PER_DEVICE = 4
MAX_WAITS = 10_000
_WAITS_SKIPPED = Counter("hawser_coap_command_waits_skipped", "Requests with ct not waiting: too many waits.")
_WAITS_ENDED = Counter("hawser_coap_command_waits_ended", "Command waits ended early by a newer one of the device.")

#: How often shutdown looks whether the devices acknowledged the last separate responses.
_DELIVERY_POLL_S = 0.02

# Block2, Block1 and Observe vary between the requests of one block-wise exchange.
_BLOCK_KEY_IGNORES = (OptionNumber.BLOCK1, OptionNumber.BLOCK2, OptionNumber.OBSERVE)


class CoapEndpoint:
    """The request handling shared by the UDP and DTLS servers; `site` is what both serve."""

    def __init__(
        self, ingest: Ingest, authenticator: DeviceAuthenticator, sessions: DeviceSessions,
        settings: CoapEndpointSettings,
    ) -> None:
        self.ingest = ingest
        self.authenticator = authenticator
        self.sessions = sessions
        self.limit = settings.max_payload_bytes
        self.blocks = BlockSpool(settings.max_payload_bytes, settings.max_block_transfers)
        # Large 2.05 replies (a command over one datagram) are served block by block from here;
        # aiocoap's cache, populated only for authenticated devices that got such a command.
        self._replies = Block2Cache()
        self.site: aiocoap.interfaces.Resource = _Site(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Command waits: every one (for drain), and each device's, oldest first (bounded below).
        self._waits: set[asyncio.Timeout] = set()
        self._device_waits: dict[tuple[str, str], list[asyncio.Timeout]] = {}
        self._draining = False
        self._idle = asyncio.Event()

    async def respond(self, request: Any) -> Any:
        """The reply to one request (a whole one, or one block of an upload)."""
        if self._draining:
            return _count(error_reply(ShuttingDown()))
        task = asyncio.current_task()
        assert task is not None  # aiocoap renders every request in a task of its own
        self._tasks.add(task)
        try:
            return _count(await self._respond(request))
        except HawserError as error:
            return _count(error_reply(error))
        except Exception:
            log.exception("unhandled error answering a CoAP request from %s", request.remote)
            return _count(internal_error_reply())
        finally:
            self._done(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._draining and not self._tasks:
            self._idle.set()

    async def _respond(self, request: Any) -> Any:
        parsed = read_request(request.code, request.opt)
        block2 = parsed.block2
        if block2 is not None and block2.block_number > 0:
            # The rest of a large 2.05: its request (same remote, same options, credentials
            # included) was answered already; nothing is published again.
            try:
                return await self._replies.extract_or_insert(request, _never)
            except IncompleteException:
                raise IncompleteBody("no reply to take a block from") from None
            except aiocoap.error.BadRequest:
                raise BadRequest("no such block of the reply") from None
        identity = _psk_identity(request.remote)
        credentials, uplink = publish_parameters(parsed, verified=identity is not None)
        payload = request.payload
        block1 = parsed.block1
        # Refused before the credentials are checked: it costs nothing to find out.
        if block1 is None and (len(payload) > self.limit or (parsed.size1 or 0) > self.limit):
            raise PayloadTooLarge(max(len(payload), parsed.size1 or 0), self.limit)
        if identity is not None:
            outcome = await self.authenticator.authenticate_identity(
                identity.application, identity.device, uplink.as_device
            )
        else:
            assert credentials is not None
            outcome = await self.authenticator.authenticate(credentials, uplink.as_device)
        if block1 is not None:
            key = (request.remote.blockwise_key, request.get_cache_key(_BLOCK_KEY_IGNORES))
            body = self.blocks.feed(key, block1, payload, parsed.size1)
            if body is None:
                return Message(code=Code.CONTINUE, block1=(block1.block_number, True, block1.size_exponent))
            payload, body = body, None
        await self.ingest.publish(outcome, uplink, payload)
        del payload  # a reassembled body is on the bus now: not held through a command wait
        command = None
        if uplink.command_timeout:
            command = await self._wait_for_command(outcome, uplink.command_timeout)
        reply = Message(code=Code.CHANGED) if command is None else _command_reply(command)
        if block1 is not None:
            reply.opt.block1 = block1
        if len(reply.payload) > request.remote.maximum_payload_size or (
            block2 is not None and len(reply.payload) > block2.size
        ):
            return await self._replies.extract_or_insert(request, _built(reply))
        return reply

    async def _wait_for_command(self, outcome: AuthOutcome, seconds: int) -> Command | None:
        """A command for the device published for, within `seconds`; cut short (None) when the
        endpoint starts draining, so that the device still gets its 2.04 before shutdown. Each
        wait holds its request (body included) until it ends, so they are bounded: a device's
        oldest wait beyond MAX_WAITS_PER_DEVICE ends at once (that device gets its 2.04), and
        beyond MAX_WAITS in all a request does not wait (its event is on the bus already)."""
        if self._draining:
            return None
        if len(self._waits) >= MAX_WAITS:
            _WAITS_SKIPPED.inc()
            return None
        key = (outcome.application.name, outcome.device.name)
        try:
            async with asyncio.timeout(None) as scope:
                waits = self._device_waits.setdefault(key, [])
                if len(waits) >= MAX_WAITS_PER_DEVICE:
                    _end_now(waits.pop(0))
                    _WAITS_ENDED.inc()
                waits.append(scope)
                self._waits.add(scope)
                try:
                    return await wait_for_command(
                        self.sessions, outcome.application.name, outcome.device.name, outcome.target.name, seconds
                    )
                finally:
                    self._waits.discard(scope)
                    if scope in waits:
                        waits.remove(scope)
                    if not waits and self._device_waits.get(key) is waits:
                        del self._device_waits[key]
        except TimeoutError:
            return None

    async def drain(self, deadline_s: float) -> None:
        """Answer new requests 5.03 from now on, end command waits (their devices get 2.04), and
        wait up to `deadline_s` for the requests being handled; then cancel what is left (a bus
        that does not answer) and wait for that too."""
        self._draining = True
        for scope in list(self._waits):
            _end_now(scope)
        if self._tasks:
            self._idle.clear()
            try:
                async with asyncio.timeout(deadline_s):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("%d CoAP request(s) still being handled after %s s: cancelled", len(self._tasks),
                            deadline_s)
                tasks = list(self._tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=1.0)
        self.blocks.clear()


class CoapServer:
    """The running UDP (and DTLS) contexts serving a `CoapEndpoint`."""

    def __init__(
        self, endpoint: CoapEndpoint, udp: Any, port: int, dtls: Any = None, dtls_port: int | None = None
    ) -> None:
        self.endpoint = endpoint
        self.port = port
        self.dtls_port = dtls_port
        self._contexts = [context for context in (udp, dtls) if context is not None]
        self._closing: asyncio.Event | None = None

    async def aclose(self, *, drain_s: float = 5.0) -> None:
        """Drain the endpoint (see `CoapEndpoint.drain`) and let the devices acknowledge the
        replies sent as separate responses (a `ct` wait's 2.04 among them), both within
        `drain_s`; then shut the contexts down, each within aiocoap's own SHUTDOWN_TIMEOUT (which
        drops whatever reply is still unacknowledged or queued). Idempotent; a second caller
        waits for the first."""
        if self._closing is not None:
            await self._closing.wait()
            return
        self._closing = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        try:
            await self.endpoint.drain(drain_s)
            while pending := sum(map(unacknowledged, self._contexts)):
                if loop.time() >= deadline:
                    log.warning("%d CoAP replies still unacknowledged at shutdown: dropped", pending)
                    break
                await asyncio.sleep(_DELIVERY_POLL_S)  # aiocoap tells nobody when an ACK arrives
        finally:
            for context in self._contexts:
                try:
                    await context.shutdown()
                except Exception:  # the other context still gets closed
                    log.exception("shutting down a CoAP server context failed")
            self._closing.set()

    async def __aenter__(self) -> CoapServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def start_coap_server(
    endpoint: CoapEndpoint, settings: CoapEndpointSettings, psk: PskKeys | None
) -> CoapServer:
    """Bind the UDP server (and the DTLS one, when `settings.dtls_port` is not -1 and `psk` holds
    the keys) and return once both accept requests."""
    await refuse_shared_port(settings.host, settings.port)
    udp = await aiocoap.Context.create_server_context(
        endpoint.site, bind=(settings.host, settings.port), transports=["udp6"]
    )
    try:
        install_deduplication(udp, max_entries=settings.max_recent_requests)  # before the screen: runs after it
        install_screen(udp)
        install_lazy_render(udp)
        unacknowledged(udp)  # fails now, not at shutdown, if aiocoap's internals moved
        port = bound_port(udp)
        dtls = dtls_port = None
        if settings.dtls_port != -1:
            if psk is None:
                log.warning("CoAP over DTLS is configured on port %s but no pre-shared keys were given: off",
                            settings.dtls_port)
            else:
                from endpoints._coap_dtls import start_dtls_context

                dtls, dtls_port = await start_dtls_context(
                    endpoint.site, settings.host, settings.dtls_port, psk, max_sessions=settings.max_dtls_sessions
                )
                install_lazy_render(dtls)
    except BaseException:
        await udp.shutdown()
        raise
    log.info("CoAP endpoint on %s:%s (UDP)%s", settings.host, port, f", {dtls_port} (DTLS)" if dtls_port else "")
    return CoapServer(endpoint, udp, port, dtls, dtls_port)


class _Site(aiocoap.interfaces.Resource):  # type: ignore[misc]  # aiocoap ships no types
    """The resource tree of the endpoint: one resource answering everything itself."""

    def __init__(self, endpoint: CoapEndpoint) -> None:
        # Not calling aiocoap's __init__: it makes a Block1Spool and a Block2Cache this site
        # never uses (it overrides render_to_pipe, their only user).
        self._endpoint = endpoint

    async def render_to_pipe(self, pipe: Any) -> None:
        pipe.add_response(await self._endpoint.respond(pipe.request), is_last=True)

    async def render(self, request: Any) -> Any:
        return await self._endpoint.respond(request)

    async def needs_blockwise_assembly(self, request: Any) -> bool:
        return False


def _psk_identity(remote: Any) -> PskIdentity | None:
    """The device a DTLS transport verified for this remote, if any."""
    for claim in remote.authenticated_claims:
        if isinstance(claim, PskIdentity):
            return claim
    return None


def _command_reply(command: Command) -> Any:
    reply = Message(code=Code.CONTENT, payload=command.payload)
    reply.opt.add_option(OpaqueOption(COMMAND_OPTION, command.name.encode("utf-8")))
    number = content_format(command.content_type)
    if number is not None:
        reply.opt.content_format = number
    return reply


def _end_now(scope: asyncio.Timeout) -> None:
    """End a command wait now (its request answers 2.04). One already expiring is ending anyway,
    and rescheduling it would raise (an evicted wait, before its task ran again)."""
    if not scope.expired():
        scope.reschedule(asyncio.get_running_loop().time())


async def _never() -> Any:
    # Block2Cache builds a reply for block 0 only; `read_request` refuses a second Block2 whose
    # number could make aiocoap's reading differ from ours. Should they ever disagree: a 4.08.
    raise IncompleteBody("no reply to take a block from")


def _built(reply: Any) -> Any:
    async def build() -> Any:
        return reply

    return build


__all__ = ["CoapEndpoint", "CoapServer", "start_coap_server"]
