"""Memory per idle MQTT connection: as many authenticated connections to Hawser's device endpoint as
this machine allows (up to 50,000), against Mosquitto holding the same number in the same run.

Hawser runs on its embedded bus (no Kafka: the bench is about connections, and each connect still
writes its `io.drogue.connection.v1` event to the durable log). Every connection authenticates as the
same device with its own client id (takeover is per client id, so none replaces another), keep-alive
one hour. The server's open-files limit is raised to its hard limit, which bounds the count; the
clients spread over worker processes and, past the ephemeral port range, over 127.0.0.x source
addresses. Reports the server's RSS before and after and RSS delta / connections (target <= 10 KiB).

    .venv/bin/python bench/mqtt_connections.py [--max 50000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import _mqtt_brokers as brokers
import _mqtt_idle as idle

KIB = 1024


@dataclass(frozen=True)
class Reading:
    name: str
    wanted: int
    accepted: int
    outcomes: dict[str, int]
    rss_before: int
    rss_after: int
    fds_before: int
    fds_after: int
    open_seconds: float
    still_open: int

    @property
    def per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / max(self.accepted, 1)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_rss(pid: int, deadline_s: float = 15.0) -> int:
    """RSS once it stops moving (two readings 1 s apart within 0.5 %), or the last one at the deadline:
    the server may still be finishing work the connects started (events, log writes)."""
    end = time.monotonic() + deadline_s
    last = h.rss_bytes(pid)
    while time.monotonic() < end:
        time.sleep(1.0)
        now = h.rss_bytes(pid)
        if abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


def source_ips(count: int) -> tuple[tuple[str, ...], int]:
    """Source addresses so that no address needs more ports than the ephemeral range has (with a margin)."""
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    per_ip = high - low + 1 - 2000
    needed = -(-count // per_ip)
    return tuple(f"127.0.0.{n}" for n in range(1, needed + 1)), per_ip


def measure(name: str, pid: int, make_plan: Callable[[str], idle.Plan], count: int, per_process: int) -> Reading:
    warm = idle.IdleConnections(make_plan("warm-"), 200, per_process=per_process)
    warm.open()  # fills the server's caches (credentials, allocator) before the baseline
    warm.close()
    before, fds_before = settled_rss(pid), open_fds(pid)
    connections = idle.IdleConnections(make_plan("idle-"), count, per_process=per_process)
    started = time.monotonic()
    outcomes = connections.open()
    seconds = time.monotonic() - started
    after, fds_after = settled_rss(pid), open_fds(pid)
    still_open = connections.close()
    return Reading(name, count, outcomes.get("accepted", 0), dict(outcomes), before, after, fds_before, fds_after,
                   seconds, still_open)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max", type=int, default=50_000, help="connections to open at most")
    args = parser.parse_args()
    h.raise_nofile()
    load_before = os.getloadavg()[0]
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # The server holds one descriptor per connection plus its own (log, listeners, database): keep a margin.
    count = min(args.max, limit - 500)
    per_process = limit - 200
    ips, per_ip = source_ips(count)

    def plan_for(port: int, username: str, password: str) -> Callable[[str], idle.Plan]:
        return lambda prefix: idle.Plan(port, prefix, username, password, ips, per_ip)

    readings = []
    with h.hawser(None) as gw:
        h.provision_device(gw)
        readings.append(measure("hawser (embedded)", gw.pid, plan_for(gw.mqtt_port, f"{h.DEVICE}@{h.APP}",
                                                                      h.PASSWORD), count, per_process))
    with brokers.mosquitto() as mosq:
        readings.append(measure("mosquitto", mosq.pid, plan_for(mosq.port, "", ""), count, per_process))

    print(f"machine: {os.cpu_count()} cores; open-files hard limit {limit} (bounds the count); "
          f"{len(ips)} source address(es), {-(-count // per_process)} client process(es); keep-alive 3600 s; "
          f"load average before: {load_before:.2f}")
    print(f"{'server':20}{'accepted':>17}{'RSS before':>12}{'RSS after':>12}{'per conn':>11}{'open fds +':>12}"
          f"{'conn/s':>9}")
    for r in readings:
        print(f"{r.name:20}{r.accepted:>8}/{r.wanted:<8}{r.rss_before / 2**20:>9.1f} MiB{r.rss_after / 2**20:>8.1f} MiB"
              f"{r.per_connection / KIB:>7.2f} KiB{r.fds_after - r.fds_before:>12}{r.accepted / r.open_seconds:>9.0f}")
    hawser, mosquitto = readings
    print(f"hawser: {hawser.per_connection / KIB:.2f} KiB per connection (target <= 10 KiB), "
          f"{hawser.per_connection / max(mosquitto.per_connection, 1):.1f}x mosquitto's")
    failed = False
    for r in readings:
        others = {k: v for k, v in r.outcomes.items() if k != "accepted"}
        if others or r.still_open != r.accepted:
            print(f"WARNING: {r.name}: outcomes {others}; {r.still_open} of {r.accepted} still open at the end")
            failed = True
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
