"""Real Apache Kafka (KRaft, single node) and PostgreSQL servers on 127.0.0.1 for tests, benchmarks and people.

Each server is one child process with its own temporary folder and free ports; `stop()` ends the process
and keeps the data, so `start()` brings it back on the same ports with the same topics or tables, and
`close()` also deletes the folder. Binaries come from scripts/provision.sh (run on demand by `ensure_*`).
Run `python scripts/services.py kafka|postgres [--port N]` to keep one in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

# Importable as `services` (scripts/ on sys.path, as tests/conftest.py does) or as `scripts.services`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _service_base import (
    Server,
    ServiceError,
    ensure_kafka,
    ensure_postgres,
    free_port,
    tail,
)

__all__ = [
    "KafkaServer",
    "PostgresServer",
    "ServiceError",
    "free_port",
    "kafka_ready",
]


class KafkaServer(Server):
    """A single-node KRaft broker+controller, `num.partitions=3`, topics created explicitly only."""

    name = "kafka"

    def __init__(
        self, port: int = 0, controller_port: int = 0, *, heap: str = "512m", startup_timeout: float = 90.0
    ) -> None:
        self.libs = ensure_kafka()
        super().__init__(startup_timeout=startup_timeout, prefix="hawser-kafka-")
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        data = self.workdir / "data"
        props = self.workdir / "server.properties"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "3",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        props.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        with open(self.log_path, "ab") as log:
            formatted = subprocess.run(
                # a short-lived tool: the simplest JIT and GC start fastest
                [
                    *self._java(),
                    "-XX:TieredStopAtLevel=1",
                    "-XX:+UseSerialGC",
                    "kafka.tools.StorageTool",
                    "format",
                    # As one argument: an id starting with "-" (one in 64) would read as an option.
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(props),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=60,
            )
        if formatted.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed; {self.log_path}:\n{tail(self.log_path)}")

    def _java(self) -> list[str]:
        return ["java", f"-Xmx{self.heap}", "-Djava.awt.headless=true", "-cp", f"{self.libs}/*"]

    def _spawn(self, log: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*self._java(), "-XX:+ExitOnOutOfMemoryError", "kafka.Kafka", str(self.workdir / "server.properties")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop Kafka in order
        )

    def _ready(self) -> bool:
        return kafka_ready(self.port)


def kafka_ready(port: int, timeout: float = 1.0) -> bool:
    """True when a broker on 127.0.0.1:`port` answers a Metadata request naming a broker and a controller."""
    client = b"hawser-probe"
    # Metadata v1, header v1: api_key, api_version, correlation_id, client_id; body: empty topic array.
    body = b"".join(
        (
            (3).to_bytes(2, "big"),
            (1).to_bytes(2, "big"),
            (7).to_bytes(4, "big"),
            len(client).to_bytes(2, "big"),
            client,
            (0).to_bytes(4, "big"),
        )
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(len(body).to_bytes(4, "big") + body)
            size = int.from_bytes(_read_exact(sock, 4), "big")
            reply = _read_exact(sock, size)
    except OSError:
        return False
    if int.from_bytes(reply[0:4], "big") != 7:
        return False
    brokers = int.from_bytes(reply[4:8], "big", signed=True)
    pos = 8
    for _ in range(max(brokers, 0)):
        pos += 4  # node_id
        pos += 2 + int.from_bytes(reply[pos : pos + 2], "big")  # host
        pos += 4  # port
        rack = int.from_bytes(reply[pos : pos + 2], "big", signed=True)
        pos += 2 + max(rack, 0)
    controller = int.from_bytes(reply[pos : pos + 4], "big", signed=True)
    return brokers >= 1 and controller >= 0


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("closed")
        chunks += chunk
    return bytes(chunks)


class PostgresServer(Server):
    """A throwaway PostgreSQL cluster: trust auth on 127.0.0.1, no fsync, user `postgres`."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, end at once

    def __init__(self, port: int = 0, *, startup_timeout: float = 60.0) -> None:
        self.bin = ensure_postgres()
        super().__init__(startup_timeout=startup_timeout, prefix="hawser-pg-")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        # initdb and postgres refuse to run as root: run them as the `postgres` system user then.
        self._user = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of `database` on this server."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """libpq/asyncpg DSN of the `postgres` database."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database and return its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unsafe database name {name!r}")
        self._psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unsafe database name {name!r}")
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _psql(self, sql: str) -> None:
        command = [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql, self.dsn]
        done = subprocess.run(command, capture_output=True, check=False, timeout=60)
        if done.returncode != 0:
            raise ServiceError(f"psql failed: {done.stderr.decode(errors='replace').strip()}")

    def _prepare(self) -> None:
        if self._user is not None:
            shutil.chown(self.workdir, self._user, self._user)
        with open(self.log_path, "ab") as log:
            done = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.workdir / "data"),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                **self._as_owner(),
                check=False,
                timeout=120,
            )
        if done.returncode != 0:
            raise ServiceError(f"initdb failed; {self.log_path}:\n{tail(self.log_path)}")

    def _as_owner(self) -> dict[str, Any]:
        """subprocess arguments that run a PostgreSQL program as the data folder's owner."""
        return {"user": self._user, "group": self._user, "extra_groups": [] if self._user else None}

    def _spawn(self, log: int) -> subprocess.Popen[bytes]:
        settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300"]
        return subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.workdir / "data"),
                "-k",
                str(self.workdir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                *(arg for s in settings for arg in ("-c", s)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            **self._as_owner(),
            start_new_session=True,
        )

    def _ready(self) -> bool:
        probe = [str(self.bin / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(probe, check=False, timeout=10).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a real service in the foreground until Ctrl-C.")
    parser.add_argument("service", choices=["kafka", "postgres"])
    parser.add_argument("--port", type=int, default=0, help="listen on this port (default: a free one)")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    server: Server = KafkaServer(args.port) if args.service == "kafka" else PostgresServer(args.port)
    try:
        server.start()
        if isinstance(server, KafkaServer):
            print(f"bootstrap: {server.bootstrap}", flush=True)
        else:
            assert isinstance(server, PostgresServer)
            print(f"url: {server.url()}", flush=True)
        print(f"started in {server.last_start_seconds:.1f}s; log: {server.log_path}; Ctrl-C stops", flush=True)
        while not stopping.wait(0.5):
            if not server.running:
                print(f"{server.name} exited; log tail:\n{tail(server.log_path)}", file=sys.stderr)
                return 1
        return 0
    except ServiceError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        print(f"stopping {server.name}", flush=True)
        server.close()


if __name__ == "__main__":
    sys.exit(main())
