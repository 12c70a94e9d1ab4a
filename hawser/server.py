"""The composition root: builds the services named in the settings and runs them in one process.

`Gateway` opens the bus and the registry, builds the device endpoints (HTTP 8080 with the TTN webhooks,
MQTT 1883/8883, CoAP 5683 and DTLS 5684), the API (8081) and the MQTT integration (1884/8884), binds their
sockets itself (so port 0 works and readiness means "bound") and serves HTTP with uvicorn, MQTT with
`hawser.mqtt.stream` and CoAP with aiocoap. Shutdown runs in a fixed order under a deadline: stop
accepting and finish in-flight requests and acknowledgements (MQTT devices are told 0x8B and their
disconnection recorded), then close the bus (flushing acknowledgements), then the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from auth.devices import DeviceAuthenticator
from auth.psk import PskKeys
from auth.tokens import AccessTokenAuthenticator, ensure_bootstrap_token
from command.sessions import DeviceSessions
from endpoints.coap import CoapEndpoint, CoapServer, start_coap_server
from endpoints.http import build_app as build_http_endpoint
from endpoints.ingest import Ingest
from endpoints.mqtt import MqttEndpoint
from hawser import passwords
from hawser._http_protocol import BoundedHttpToolsProtocol
from hawser.bus import EventBus, open_bus
from hawser.config import Settings, TlsSettings
from hawser.mqtt.stream import Handler, MqttListener, StreamLimits, start_listener
from hawser.problems import API_STATUS, exception_handlers
from hawser.telemetry import operational_routes
from hawser.tls import server_context
from integration.mqtt import MqttIntegration
from integration.websocket import routes as websocket_routes
from registry.api import routes as registry_routes
from registry.store import RegistryStore

log = logging.getLogger(__name__)

#: Seconds in-flight requests get to finish on shutdown before they are cancelled.
DRAIN_SECONDS = 10


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the composition root owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048, reuse_port=False)
    sock.setblocking(False)
    return sock


class Gateway:
    """Every service of one Hawser process, as one async context manager."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bootstrap_token: str | None = None
        self.http_port: int | None = None
        self.api_port: int | None = None
        self.mqtt_port: int | None = None
        self.mqtt_tls_port: int | None = None
        self.mqtt_integration_port: int | None = None
        self.mqtt_integration_tls_port: int | None = None
        self.coap_port: int | None = None
        self.coap_dtls_port: int | None = None
        self._listeners: list[MqttListener] = []
        self._coap: CoapServer | None = None
        self._bus: EventBus | None = None
        self._store: RegistryStore | None = None
        self._servers: list[_Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    @property
    def bus(self) -> EventBus:
        assert self._bus is not None, "gateway not started"
        return self._bus

    @property
    def store(self) -> RegistryStore:
        assert self._store is not None, "gateway not started"
        return self._store

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        cost = settings.auth
        passwords.configure(passwords.KdfCost(cost.argon2_time_cost, cost.argon2_memory_kib, cost.argon2_parallelism))

        bus = open_bus(settings)
        await bus.start()
        self._bus = bus
        self._stack.push_async_callback(bus.aclose)

        store = await RegistryStore.open(settings.database_url(), bus=bus)
        self._store = store
        self._stack.push_async_callback(store.aclose)

        devices: DeviceAuthenticator | None = None
        device_services = {"http-endpoint", "mqtt-endpoint", "coap-endpoint"}
        if device_services.intersection(settings.services):
            devices = DeviceAuthenticator(
                store, cache_size=settings.auth.credential_cache_size, cache_ttl_s=settings.auth.credential_cache_ttl_s,
                kdf_max_waiting=settings.auth.kdf_max_waiting,
            )
            self._stack.push_async_callback(devices.aclose)

        if "http-endpoint" in settings.services:
            assert devices is not None
            ingest = Ingest(bus, instance=settings.instance, max_payload_bytes=settings.http.max_payload_bytes)
            app = build_http_endpoint(ingest, devices, settings.http)
            self.http_port = self._serve(app, settings.http.host, settings.http.port, websockets=False)

        # One registry of this process's device sessions, where the command router will find them.
        sessions = DeviceSessions()
        if "mqtt-endpoint" in settings.services:
            assert devices is not None
            mqtt = settings.mqtt
            endpoint = MqttEndpoint(
                Ingest(bus, instance=settings.instance, max_payload_bytes=mqtt.max_payload_bytes),
                devices, sessions, mqtt,
            )
            self.mqtt_port, self.mqtt_tls_port = await self._listen(
                endpoint.handle, endpoint.limits, mqtt.host, mqtt.port, mqtt.tls_port, mqtt.tls, "mqtt-endpoint"
            )

        if "coap-endpoint" in settings.services:
            assert devices is not None
            coap = settings.coap
            keys = None
            if coap.dtls_port >= 0:
                keys = PskKeys(store, cache_size=settings.auth.credential_cache_size,
                               cache_ttl_s=settings.auth.credential_cache_ttl_s)
                self._stack.push_async_callback(keys.aclose)
            coap_endpoint = CoapEndpoint(
                Ingest(bus, instance=settings.instance, max_payload_bytes=coap.max_payload_bytes),
                devices, sessions, coap,
            )
            self._coap = await start_coap_server(coap_endpoint, coap, keys)
            self.coap_port, self.coap_dtls_port = self._coap.port, self._coap.dtls_port

        users = AccessTokenAuthenticator(store)
        if "mqtt-integration" in settings.services:
            mqtt_integration = settings.mqtt_integration
            integration = MqttIntegration(bus, store, users, mqtt_integration)
            self.mqtt_integration_port, self.mqtt_integration_tls_port = await self._listen(
                integration.handle, integration.limits, mqtt_integration.host, mqtt_integration.port,
                mqtt_integration.tls_port, mqtt_integration.tls, "mqtt-integration",
            )

        if "api" in settings.services:
            self.bootstrap_token = await ensure_bootstrap_token(store, settings.bootstrap_token)
            api = Starlette(
                routes=[
                    *registry_routes(store, users),
                    *websocket_routes(bus, store, users, buffer=settings.api.websocket_buffer,
                                      buffer_bytes=settings.api.websocket_buffer_bytes),
                    *operational_routes(),
                ],
                exception_handlers=exception_handlers(API_STATUS),  # type: ignore[arg-type]
            )
            self.api_port = self._serve(api, settings.api.host, settings.api.port, websockets=True)

        # Everything loaded so far (libraries, registry schema, settings) lives as long as the process:
        # moving it out of the collector's sight keeps full collections short, which the per-message
        # garbage of a busy endpoint otherwise triggers often (they showed as 70 ms tail latencies).
        gc.collect()
        gc.freeze()

        # Wait until every server listens, so the caller may connect as soon as we return.
        while not all(s.started for s in self._servers):
            if any(t.done() for t in self._tasks):
                for t in self._tasks:
                    if t.done() and t.exception():
                        raise RuntimeError("a server failed to start") from t.exception()
                raise RuntimeError("a server stopped during start-up")
            await asyncio.sleep(0.01)

    async def _listen(
        self, handler: Handler, limits: StreamLimits, host: str, port: int, tls_port: int, tls: TlsSettings,
        name: str,
    ) -> tuple[int, int | None]:
        """Serve an MQTT service on `port` and, unless `tls_port` is -1, with TLS on `tls_port`."""
        plain = await start_listener(handler, host, port, limits=limits, name=name)
        self._listeners.append(plain)
        if tls_port < 0:
            return plain.port, None
        context = server_context(tls, self.settings.data_dir)
        secure = await start_listener(handler, host, tls_port, limits=limits, ssl=context, name=f"{name}-tls")
        self._listeners.append(secure)
        return plain.port, secure.port

    def _serve(self, app: ASGIApp, host: str, port: int, *, websockets: bool) -> int:
        sock = _bind(host, port)
        config = uvicorn.Config(
            app,
            http=BoundedHttpToolsProtocol,
            ws="websockets-sansio" if websockets else "none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # nothing in Hawser reads client addresses; saves a middleware per request
            timeout_graceful_shutdown=DRAIN_SECONDS,
            ws_per_message_deflate=False,
        )
        server = _Server(config)
        self._servers.append(server)
        self._tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{port}"))
        bound_port: int = sock.getsockname()[1]
        return bound_port

    async def wait_closed(self) -> None:
        """Return when any server stops by itself (which is an error unless shutting down)."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def aclose(self) -> None:
        """Stop accepting and drain requests, then close the bus, then the registry. Idempotent."""
        for server in self._servers:
            server.should_exit = True
        listeners, self._listeners = self._listeners, []
        draining = [asyncio.create_task(listener.aclose(DRAIN_SECONDS), name=f"drain:{listener.name}")
                    for listener in listeners]
        coap, self._coap = self._coap, None
        if coap is not None:
            draining.append(asyncio.create_task(coap.aclose(drain_s=DRAIN_SECONDS), name="drain:coap-endpoint"))
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=DRAIN_SECONDS + 5)
            for task in pending:
                log.warning("server %s did not drain in time; cancelling", task.get_name())
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("server %s failed", task.get_name(), exc_info=task.exception())
        self._tasks.clear()
        self._servers.clear()
        if draining:
            await asyncio.gather(*draining)
        await self._stack.aclose()


def _banner(gateway: Gateway) -> str:
    settings = gateway.settings
    lines = ["", "Hawser is running."]
    if gateway.http_port is not None:
        lines.append(f"  device HTTP endpoint   http://127.0.0.1:{gateway.http_port}/v1/<channel>")
    if gateway.mqtt_port is not None:
        tls = f", TLS {gateway.mqtt_tls_port}" if gateway.mqtt_tls_port else ""
        lines.append(f"  device MQTT endpoint   mqtt://127.0.0.1:{gateway.mqtt_port}{tls}")
    if gateway.coap_port is not None:
        dtls = f", DTLS-PSK {gateway.coap_dtls_port}" if gateway.coap_dtls_port else ""
        lines.append(f"  device CoAP endpoint   coap://127.0.0.1:{gateway.coap_port}/v1/<channel>{dtls}")
    if gateway.http_port is not None:
        lines.append(f"  TTN webhooks           http://127.0.0.1:{gateway.http_port}/ttn/v3 (and /ttn/v2)")
    if gateway.api_port is not None:
        lines.append(f"  registry & integration http://127.0.0.1:{gateway.api_port}/api/")
    if gateway.mqtt_integration_port is not None:
        tls = f", TLS {gateway.mqtt_integration_tls_port}" if gateway.mqtt_integration_tls_port else ""
        lines.append(f"  MQTT integration       mqtt://127.0.0.1:{gateway.mqtt_integration_port}{tls}")
    if gateway.mqtt_tls_port or gateway.mqtt_integration_tls_port:
        lines.append(f"  TLS certificate        {settings.data_dir / 'tls' / 'cert.pem'} (unless configured)")
    lines.append(f"  event bus              {settings.bus.kind}"
                 + (f" ({settings.bus.kafka_bootstrap})" if settings.bus.kind == "kafka" else
                    f" ({settings.embedded_log_path()})"))
    if gateway.bootstrap_token:
        lines += [
            "",
            "A bootstrap admin token was created. It is shown this once and stored only as a hash:",
            f"  export HAWSER_TOKEN={gateway.bootstrap_token}",
            "",
            "Next, in another terminal (with HAWSER_TOKEN set as above):",
            "  hawser app create my-app",
            "  hawser device create my-app my-device --password hey-rodney",
            "  hawser stream my-app",
            f"  mosquitto_sub -p {gateway.mqtt_integration_port or 1884} -V mqttv5 -u $HAWSER_TOKEN -t app/my-app",
            "  curl -u my-device@my-app:hey-rodney -H 'content-type: application/json' \\",
            f"       -d '{{\"temp\": 42}}' http://127.0.0.1:{gateway.http_port or 8080}/v1/telemetry",
        ]
    return "\n".join(lines) + "\n"


async def run(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with Gateway(settings) as gateway:
        print(_banner(gateway), flush=True)
        stopped = asyncio.create_task(stop.wait())
        closed = asyncio.create_task(gateway.wait_closed())
        await asyncio.wait([stopped, closed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        closed.cancel()
        log.info("shutting down")


def serve(settings: Settings) -> None:
    """Run the gateway on uvloop (when installed) until a signal stops it: what `hawser serve` does."""
    from hawser.telemetry import configure_logging

    configure_logging(settings.log_level)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run(settings))
