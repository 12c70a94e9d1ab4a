"""The reference MQTT brokers of the benchmarks, each in its own process on a free 127.0.0.1 port:
Mosquitto (Debian's binary, plain listener, anonymous, no persistence) and amqtt's broker (anonymous,
no other plugins, on uvloop like Hawser). Also a paho-mqtt check that a broker acknowledges QoS 1.

Run as `python bench/_mqtt_brokers.py amqtt PORT` to serve amqtt's broker in the foreground.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _harness as h
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class Broker:
    name: str
    port: int
    pid: int


def wait_port(port: int, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {deadline_s}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        subprocess.run(["bash", str(h.ROOT / "scripts" / "provision.sh")], check=True)
        found = "/usr/sbin/mosquitto"
    return found


@contextlib.contextmanager
def mosquitto() -> Iterator[Broker]:
    folder = Path(tempfile.mkdtemp(prefix="hawser-bench-mosquitto-"))
    port = h.free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=h.raise_nofile)
    try:
        wait_port(port)
        yield Broker("mosquitto", port, proc.pid)
    finally:
        _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def amqtt() -> Iterator[Broker]:
    port = h.free_port()
    proc = subprocess.Popen([sys.executable, __file__, "amqtt", str(port)], stdout=subprocess.PIPE,
                            preexec_fn=h.raise_nofile)
    try:
        # It says when it listens (a bare TCP probe would make it log an error about an empty session).
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready or proc.stdout.readline() != b"ready\n":
            raise RuntimeError("amqtt's broker did not start")
        yield Broker("amqtt", port, proc.pid)
    finally:
        _stop(proc)


def paho_publish(port: int, *, client_id: str, username: str = "", password: str = "", topic: str = "telemetry",
                 payload: bytes = b'{"check":true}', count: int = 1, seconds: float = 0.0,
                 inflight: int = 20) -> int:
    """Publish QoS 1 with paho-mqtt (3.1.1): `count` messages, or as many as fit in `seconds` with
    `inflight` outstanding; returns how many got their PUBACK. Raises if the broker refuses to connect."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if username:
        client.username_pw_set(username, password or None)
    client.max_inflight_messages_set(inflight)
    slots = threading.Semaphore(inflight)
    acked = 0
    lock = threading.Lock()

    def on_publish(client: mqtt.Client, userdata: object, mid: int, reason: object, properties: object) -> None:
        nonlocal acked
        with lock:
            acked += 1
        slots.release()

    client.on_publish = on_publish
    if client.connect("127.0.0.1", port, keepalive=60) != mqtt.MQTT_ERR_SUCCESS:
        raise RuntimeError(f"paho could not connect to port {port}")
    client.loop_start()
    try:
        end = time.monotonic() + seconds
        sent = 0
        while (sent < count if not seconds else time.monotonic() < end):
            if not slots.acquire(timeout=10):
                raise RuntimeError(f"paho: no PUBACK within 10 s from port {port}")
            if client.publish(topic, payload, qos=1).rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"paho: publish refused by the client on port {port} (not connected?)")
            sent += 1
        deadline = time.monotonic() + 10
        while acked < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        return acked
    finally:
        client.disconnect()
        client.loop_stop()


async def _serve_amqtt(port: int) -> None:
    # imported here: only the broker process needs it
    from amqtt.broker import Broker as AmqttBroker

    broker = AmqttBroker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


def main() -> None:
    import uvloop

    if sys.argv[1:2] != ["amqtt"] or len(sys.argv) != 3:
        raise SystemExit("usage: _mqtt_brokers.py amqtt PORT")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(_serve_amqtt(int(sys.argv[2])))


if __name__ == "__main__":
    main()
