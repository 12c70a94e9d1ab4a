"""What the benchmarks share: a real Kafka, a real Hawser process, provisioned devices, wrk, and
readings of a process's CPU time and memory from /proc.

Everything runs on 127.0.0.1 and stops by itself. Kafka comes from scripts/services.py unless
`HAWSER_BENCH_KAFKA=host:port` names a broker that is already running on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import queue as queue_module
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from services import KafkaServer  # noqa: E402 - scripts/ is not a package
from services import free_port as free_port  # noqa: E402

TOKEN = "hwsr_bench_" + "x" * 32
APP, DEVICE, PASSWORD = "bench-app", "bench-device", "bench-password-1"


def wait_http(url: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {deadline_s}s")


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    configured = os.environ.get("HAWSER_BENCH_KAFKA")
    if configured:
        yield configured
        return
    subprocess.run(["bash", str(ROOT / "scripts" / "provision.sh")], check=True)
    server = KafkaServer()
    server.start()
    try:
        yield str(server.bootstrap)
    finally:
        server.close()  # stops it and deletes its data folder


def raise_nofile() -> None:
    """Raise this process's open-files soft limit to its hard limit (also a `preexec_fn` for servers)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True)
class Hawser:
    http_port: int
    api_port: int
    pid: int
    mqtt_port: int = 0
    mqtt_integration_port: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@contextlib.contextmanager
def hawser(bootstrap: str | None, **env: str) -> Iterator[Hawser]:
    """A `hawser serve` process on free ports (Kafka bus if `bootstrap`, else the embedded log), its
    MQTT listeners on 127.0.0.1 without TLS, and its open-files limit raised to the hard limit."""
    data_dir = tempfile.mkdtemp(prefix="hawser-bench-")
    http_port, api_port, mqtt_port, integration_port = free_port(), free_port(), free_port(), free_port()
    environ = {
        **os.environ,
        "HAWSER_DATA_DIR": data_dir,
        "HAWSER_HTTP__PORT": str(http_port),
        "HAWSER_HTTP__HOST": "127.0.0.1",
        "HAWSER_API__PORT": str(api_port),
        "HAWSER_API__HOST": "127.0.0.1",
        "HAWSER_MQTT__HOST": "127.0.0.1",
        "HAWSER_MQTT__PORT": str(mqtt_port),
        "HAWSER_MQTT__TLS_PORT": "-1",
        "HAWSER_MQTT_INTEGRATION__HOST": "127.0.0.1",
        "HAWSER_MQTT_INTEGRATION__PORT": str(integration_port),
        "HAWSER_MQTT_INTEGRATION__TLS_PORT": "-1",
        "HAWSER_BOOTSTRAP_TOKEN": TOKEN,
        "HAWSER_LOG_LEVEL": "WARNING",
        **env,
    }
    if bootstrap:
        environ |= {"HAWSER_BUS__KIND": "kafka", "HAWSER_BUS__KAFKA_BOOTSTRAP": bootstrap}
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "hawser"), "serve"], env=environ,
                            stdout=subprocess.DEVNULL, preexec_fn=raise_nofile)
    try:
        wait_http(f"http://127.0.0.1:{api_port}/health/live")
        yield Hawser(http_port, api_port, proc.pid, mqtt_port, integration_port)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def create_topic(bootstrap: str, topic: str) -> None:
    """A 3-partition topic, as Hawser creates for an application (the references need their own)."""

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create())


def provision_device(gw: Hawser, extra_devices: int = 0) -> list[str]:
    """The app, its device `DEVICE`, and `extra_devices` more (`DEVICE-1`...), all with `PASSWORD`;
    returns the device names."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    names = [DEVICE] + [f"{DEVICE}-{n}" for n in range(1, extra_devices + 1)]
    with httpx.Client(base_url=gw.api, headers=headers, timeout=30) as client:
        client.post("/api/registry/v1alpha1/apps", json={"metadata": {"name": APP}}).raise_for_status()
        for name in names:
            client.post(
                f"/api/registry/v1alpha1/apps/{APP}/devices",
                json={"metadata": {"name": name, "application": APP},
                      "spec": {"authentication": {"credentials": [{"pass": PASSWORD}]}}},
            ).raise_for_status()
    return names


def basic_auth() -> str:
    return "Basic " + base64.b64encode(f"{DEVICE}@{APP}:{PASSWORD}".encode()).decode()


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


_LUA = """
wrk.method = "POST"
wrk.body = '{"temp":21.5,"hum":40}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "%s"
"""


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"cannot read wrk's latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, *, seconds: int, connections: int, authorization: str = "") -> WrkResult:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA % authorization)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        check=True, capture_output=True, text=True,
    ).stdout
    os.unlink(script.name)
    if "Requests/sec" not in out or "99%" not in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock_errors = re.search(r"Socket errors: (.*)", out)
    if sock_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", sock_errors.group(1)))
    return WrkResult(requests, rate, p50, p99, errors)


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port` on this machine (e.g. Kafka), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def own_cpu() -> float:
    """CPU seconds this process used so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def get_from_workers(queue: Any, workers: list[Any], timeout: float) -> Any:
    """The next item from a multiprocessing `queue`, failing fast when a worker process died
    instead of waiting out the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(queue_module.Empty):
            return queue.get(timeout=0.5)
        if any(w.exitcode not in (None, 0) for w in workers):
            raise RuntimeError("a load worker failed (its traceback is above)")
    raise RuntimeError(f"no answer from the load workers within {timeout}s")
