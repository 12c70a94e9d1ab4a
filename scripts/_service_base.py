"""Provisioning lookups and the process scaffolding shared by the real test services (scripts/services.py).

`Server` owns one child process: a deadline-bounded start that polls readiness and reports the log's
tail on failure, a graceful stop that keeps the data, and `close()` that also deletes the temp folder.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Self

SCRIPTS = Path(__file__).resolve().parent
#: Named once, in the pom that provision.sh resolves the jars from.
KAFKA_VERSION = re.search(r"<kafka.version>(.+?)</kafka.version>", (SCRIPTS / "kafka-pom.xml").read_text()).group(1)  # type: ignore[union-attr]
_live: weakref.WeakSet[Server] = weakref.WeakSet()


class ServiceError(RuntimeError):
    """A service could not be provisioned, started or reached; the message carries its log's tail."""


def cache_dir() -> Path:
    """Where provision.sh keeps the Kafka jars and its Maven repository (same rule as the script)."""
    if env := os.environ.get("HAWSER_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hawser"


def kafka_libs() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def provision() -> None:
    """Run scripts/provision.sh (idempotent; quick and silent when everything is there)."""
    result = subprocess.run(["bash", str(SCRIPTS / "provision.sh")], check=False)
    if result.returncode != 0:
        raise ServiceError(f"scripts/provision.sh failed with exit code {result.returncode}")


def ensure_kafka() -> Path:
    if not (kafka_libs().parent / ".complete").is_file():
        provision()
    return kafka_libs()


def ensure_postgres() -> Path:
    if postgres_bin() is None:
        provision()
    found = postgres_bin()
    if found is None:
        raise ServiceError("no PostgreSQL server under /usr/lib/postgresql after provisioning")
    return found


_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and stays out of other processes' way.

    Not one the OS picks with port 0: those come from the ephemeral range, which every outgoing
    connection draws its source port from, so between the probe and a server's bind (a JVM takes a
    second to get there) a client socket of the test run could take it. Ports below that range are
    never handed out implicitly; one of them is picked at random, checked free by binding it, and
    never given twice by this process.
    """
    floor = _ephemeral_floor()
    for _ in range(1000):
        port = random.randrange(20_000, floor)  # noqa: S311 - spreading ports, not secrets
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise ServiceError("no free TCP port below the ephemeral range")


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Server:
    """One child process with a deadline-bounded start, a graceful stop and a temp folder."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, *, startup_timeout: float, prefix: str) -> None:
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.log_path = self.workdir / f"{self.name}.log"
        self.last_start_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._closed = False
        _live.add(self)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _prepare(self) -> None:
        """First start only: lay out the data folder."""

    def _spawn(self, log: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start (or restart) and return once the server answers; no-op when it is running."""
        if self._closed:
            raise ServiceError(f"{self.name} was closed")
        if self.running:
            return
        began = time.monotonic()
        if not self._prepared:
            self._prepare()
            self._prepared = True
        with open(self.log_path, "ab") as log:
            self._proc = self._spawn(log.fileno())
        deadline = began + self.startup_timeout
        while not self._ready():
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {self._proc.returncode} while starting; "
                    f"{self.log_path}:\n{tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} did not answer within {self.startup_timeout:.0f}s; "
                    f"{self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)
        self.last_start_seconds = time.monotonic() - began

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (killed after `timeout`) and wait; the data stays for the next `start()`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop and delete the temporary folder. Idempotent."""
        self.stop()
        if not self._closed:
            self._closed = True
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        server.close()
