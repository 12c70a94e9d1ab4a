"""One typed configuration tree for every service.

Read from the environment with the prefix `HAWSER_` and `__` between levels, for example
`HAWSER_BUS__KIND=kafka` and `HAWSER_BUS__KAFKA_BOOTSTRAP=127.0.0.1:9092`. Validated at start-up, so
a typo fails the start instead of the first request.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusSettings(BaseModel):
    """Where events go: the embedded durable log (default) or Apache Kafka."""

    kind: Literal["embedded", "kafka"] = "embedded"
    #: Path of the embedded log's SQLite file; relative paths are under `data_dir`.
    embedded_path: Path = Path("events.db")
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: Partitions of each `events-<app>` topic; consumer groups split work by partition.
    partitions: int = Field(default=3, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    linger_ms: int = Field(default=5, ge=0, le=1000)
    #: Largest batch of records the Kafka producer sends to one partition at a time. At most 1 MiB:
    #: a broker with default settings refuses larger batches, which would stall the partition.
    kafka_max_batch_bytes: int = Field(default=256 * 1024, ge=16 * 1024, le=1024 * 1024)
    #: How long a send may wait for the bus before the device is told to come back later.
    send_timeout_s: float = Field(default=10.0, gt=0)


class RegistrySettings(BaseModel):
    """The SQL device registry. SQLite under `data_dir` by default; PostgreSQL by URL."""

    #: SQLAlchemy async URL; empty means `sqlite+aiosqlite:///<data_dir>/registry.db`.
    database_url: str = ""


class AuthSettings(BaseModel):
    """Device and user authentication."""

    #: Entries in the verified-credential cache (successful password checks).
    credential_cache_size: int = Field(default=100_000, ge=0)
    #: Seconds a cached verification is trusted; bounds staleness across instances.
    credential_cache_ttl_s: float = Field(default=60.0, ge=0)
    #: Argon2id cost; the defaults follow RFC 9106's second recommended option, scaled down in memory.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19_456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    #: Password checks that may wait for a KDF thread; beyond this, devices are told to retry (503).
    kdf_max_waiting: int = Field(default=64, ge=1)


class HttpEndpointSettings(BaseModel):
    """The device-facing HTTP endpoint."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Largest accepted payload in bytes (the CloudEvent data).
    max_payload_bytes: int = Field(default=256 * 1024, ge=1)


class ApiSettings(BaseModel):
    """The API port: registry, tokens, WebSocket integration, commands."""

    host: str = "0.0.0.0"
    port: int = Field(default=8081, ge=0, le=65535)
    #: Events buffered per WebSocket subscriber; when full, the socket stops reading the bus (backpressure).
    #: Small on purpose: what is sent but unread when a group's client leaves is lost to the group.
    websocket_buffer: int = Field(default=64, ge=1)
    #: The same buffer's bound in bytes (one larger event still passes, alone).
    websocket_buffer_bytes: int = Field(default=1024 * 1024, ge=1)


class TlsSettings(BaseModel):
    """A TLS listener's certificate chain and key (PEM). When both are empty, Hawser generates a
    self-signed certificate for `localhost`/127.0.0.1 under `data_dir/tls/` on first start, so the TLS
    ports work out of the box (clients then trust that file: `mosquitto_pub --cafile ...`)."""

    cert: Path | None = None
    key: Path | None = None


class MqttEndpointSettings(BaseModel):
    """The device-facing MQTT endpoint (3.1.1 and 5)."""

    host: str = "0.0.0.0"
    port: int = Field(default=1883, ge=0, le=65535)
    #: The MQTT over TLS port; -1 turns the TLS listener off.
    tls_port: int = Field(default=8883, ge=-1, le=65535)
    tls: TlsSettings = TlsSettings()
    #: Largest accepted payload in bytes (a larger PUBLISH is refused with 0x97 / 0x95).
    max_payload_bytes: int = Field(default=256 * 1024, ge=1)
    #: Un-acknowledged QoS 1 publishes per connection (MQTT 5 Receive Maximum; 3.1.1 clients are
    #: simply not read from beyond it). MQTT 5 requires disconnecting a client that exceeds it, and
    #: paho-mqtt keeps up to 20 in flight whatever the server announces: stay at 20 or above.
    receive_maximum: int = Field(default=64, ge=1, le=65535)
    #: Seconds a socket may take to send its CONNECT.
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: Bytes a connection may have waiting to be written before it stops being read (slow readers).
    write_buffer_bytes: int = Field(default=64 * 1024, ge=1024)


class MqttIntegrationSettings(BaseModel):
    """The application-facing MQTT integration (events out, commands in)."""

    host: str = "0.0.0.0"
    port: int = Field(default=1884, ge=0, le=65535)
    #: The MQTT over TLS port; -1 turns the TLS listener off.
    tls_port: int = Field(default=8884, ge=-1, le=65535)
    tls: TlsSettings = TlsSettings()
    #: Largest packet accepted from applications (subscriptions, commands).
    max_packet_bytes: int = Field(default=256 * 1024, ge=1024)
    #: QoS 1 events sent to one subscription and not yet PUBACKed (the at-least-once window).
    inflight: int = Field(default=64, ge=1, le=65535)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    write_buffer_bytes: int = Field(default=256 * 1024, ge=1024)


class CoapEndpointSettings(BaseModel):
    """The device-facing CoAP endpoint: UDP, and DTLS with pre-shared keys."""

    host: str = "0.0.0.0"
    port: int = Field(default=5683, ge=0, le=65535)
    #: The CoAP over DTLS (PSK) port; -1 turns DTLS off.
    dtls_port: int = Field(default=5684, ge=-1, le=65535)
    #: Largest accepted payload in bytes, whole or reassembled from Block1 transfers (4.13 beyond).
    max_payload_bytes: int = Field(default=64 * 1024, ge=1)
    #: Block-wise uploads being reassembled at once; the oldest is dropped beyond this.
    max_block_transfers: int = Field(default=256, ge=1)
    #: Requests remembered to recognise retransmissions (RFC 7252 deduplication, 247 s each); the
    #: oldest is forgotten beyond this. About 200 bytes each; a device retransmits for 45 s at most.
    max_recent_requests: int = Field(default=262_144, ge=1)
    #: DTLS sessions kept at once (each a handshake state or an open session); the least recently
    #: used is dropped beyond this.
    max_dtls_sessions: int = Field(default=1024, ge=1)


Service = Literal["http-endpoint", "mqtt-endpoint", "coap-endpoint", "api", "mqtt-integration"]


class Settings(BaseSettings):
    """Everything one Hawser process needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="HAWSER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Path(".hawser")
    #: Name of this instance, written into every event (`instance` extension).
    instance: str = Field(default_factory=socket.gethostname)
    #: Services this process runs; all by default.
    services: tuple[Service, ...] = ("http-endpoint", "mqtt-endpoint", "coap-endpoint", "api", "mqtt-integration")
    #: If set on first start, becomes the bootstrap admin token instead of a random one.
    bootstrap_token: str = ""
    log_level: str = "INFO"

    bus: BusSettings = BusSettings()
    registry: RegistrySettings = RegistrySettings()
    auth: AuthSettings = AuthSettings()
    http: HttpEndpointSettings = HttpEndpointSettings()
    api: ApiSettings = ApiSettings()
    mqtt: MqttEndpointSettings = MqttEndpointSettings()
    coap: CoapEndpointSettings = CoapEndpointSettings()
    mqtt_integration: MqttIntegrationSettings = MqttIntegrationSettings()

    def database_url(self) -> str:
        if self.registry.database_url:
            return self.registry.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'registry.db'}"

    def embedded_log_path(self) -> Path:
        path = self.bus.embedded_path
        return path if path.is_absolute() else self.data_dir / path
