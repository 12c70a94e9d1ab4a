"""A real `hawser serve` in a subprocess (embedded defaults, ports chosen here) for the CLI tests:
the command line is tested exactly as a user runs it against a running gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port

TOKEN = "hwsr_cli_test_" + "k" * 32


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any HAWSER_ variable of the person running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAWSER_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Served:
    api_url: str
    http_url: str
    token: str
    mqtt_port: int
    mqtt_integration_port: int
    process: subprocess.Popen[str]
    log: Path


def _wait_ready(served: Served, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"hawser serve exited early:\n{served.log.read_text()}")
        try:
            api = httpx.get(f"{served.api_url}/health/ready", timeout=1)
            http = httpx.get(f"{served.http_url}/health/live", timeout=1)
            if api.status_code == 200 and http.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a subprocess's readiness, with a deadline
    raise AssertionError(f"hawser serve did not become ready:\n{served.log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("hawser-serve")
    api_port, http_port = free_port(), free_port()
    mqtt_port, mqtt_integration_port = free_port(), free_port()
    env = clean_env(
        HAWSER_DATA_DIR=str(home / "data"),
        HAWSER_API__HOST="127.0.0.1",
        HAWSER_API__PORT=str(api_port),
        HAWSER_HTTP__HOST="127.0.0.1",
        HAWSER_HTTP__PORT=str(http_port),
        HAWSER_MQTT__HOST="127.0.0.1",
        HAWSER_MQTT__PORT=str(mqtt_port),
        HAWSER_MQTT__TLS_PORT=str(free_port()),
        HAWSER_MQTT_INTEGRATION__HOST="127.0.0.1",
        HAWSER_MQTT_INTEGRATION__PORT=str(mqtt_integration_port),
        HAWSER_MQTT_INTEGRATION__TLS_PORT=str(free_port()),
        HAWSER_COAP__HOST="127.0.0.1",
        HAWSER_COAP__PORT="0",
        HAWSER_COAP__DTLS_PORT="0",
        HAWSER_BOOTSTRAP_TOKEN=TOKEN,
        HAWSER_AUTH__ARGON2_TIME_COST="1",
        HAWSER_AUTH__ARGON2_MEMORY_KIB="1024",
        HAWSER_INSTANCE="cli-test",
    )
    log = home / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "hawser.cli", "serve"], env=env, cwd=home,
                                   stdout=out, stderr=subprocess.STDOUT, text=True)
    result = Served(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{http_port}", TOKEN, mqtt_port,
                    mqtt_integration_port, process, log)
    try:
        _wait_ready(result)
        yield result
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    output = log.read_text()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
