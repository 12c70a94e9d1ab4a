"""CoAP publish throughput: Hawser's CoAP endpoint against a bare aiocoap resource doing the same
aiokafka send.

Both serve UDP on 127.0.0.1 from their own process on uvloop, in front of the same real Kafka:
Hawser as `hawser serve` with only its CoAP endpoint and API (option 4209 Basic credentials of one
of 100 seeded devices, verified-credential cache, CloudEvent, 2.04 once Kafka holds it; DTLS off),
the reference as a plain aiocoap resource that awaits aiokafka's `send` of a same-shaped record
(bench/_coap_bare.py), with no auth. The same load goes into each: confirmable POSTs of a 43-byte
JSON document from one UDP socket per device, each keeping `--window` requests in flight (1: RFC
7252's NSTART), from a separate raw-UDP load process (bench/_coap_load.py). Every run is a fixed
number of messages under a time limit; rounds alternate between the two so that drift of the
machine hits both alike. Prints both rates, the ratio (target >= 0.7), p50/p99 latency, each
server's CPU-seconds per 1,000 messages, and checks that Kafka holds exactly one event per 2.04
Hawser gave.

    .venv/bin/python bench/coap_publish.py [--messages 20000] [--rounds 3] [--devices 100] [--window 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _coap_load as load
import _harness as h
from mqtt_publish import count_events

BENCH = Path(__file__).resolve().parent


@dataclass
class Subject:
    name: str
    port: int
    pid: int
    authorizations: list[str]
    runs: list[load.LoadResult] = field(default_factory=list)
    server_cpu: float = 0.0
    changed_total: int = 0  # every 2.04 this server gave, warm-up included
    requests_total: int = 0

    @property
    def rate(self) -> float:
        return sum(r.rate for r in self.runs) / len(self.runs)

    def merged(self) -> load.LoadResult:
        runs = self.runs
        codes: dict[str, int] = {}
        for run in runs:
            for name, n in run.codes.items():
                codes[name] = codes.get(name, 0) + n
        return load.LoadResult(
            seconds=sum(r.seconds for r in runs), requests=sum(r.requests for r in runs),
            changed=sum(r.changed for r in runs), codes=codes, lost=sum(r.lost for r in runs),
            retransmissions=sum(r.retransmissions for r in runs), separate=sum(r.separate for r in runs),
            unfinished=sum(r.unfinished for r in runs), latencies_ms=[x for r in runs for x in r.latencies_ms],
            generator_cpu_s=sum(r.generator_cpu_s for r in runs),
        )


@contextlib.contextmanager
def server(argv: list[str], deadline_s: float = 60.0) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A server process that prints one line (`PORT <n>`) once it serves; stopped with SIGTERM."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True, preexec_fn=h.raise_nofile)
    try:
        assert proc.stdout is not None
        end = time.monotonic() + deadline_s
        line = ""
        while not line and time.monotonic() < end and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                line = proc.stdout.readline()  # the servers print their one line at once
        if not line:
            raise RuntimeError(f"{argv[0]} did not start (exit code {proc.poll()})")
        yield proc, line.split()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(subject: Subject, args: argparse.Namespace, messages: int) -> load.LoadResult:
    marks: dict[str, float] = {}

    def on_start() -> None:
        marks["server"] = h.cpu_seconds(subject.pid)

    result = load.run_load(subject.port, subject.authorizations, messages=messages, window=args.window,
                           time_limit=args.time_limit, processes=args.processes, on_start=on_start)
    subject.server_cpu += h.cpu_seconds(subject.pid) - marks["server"]
    subject.changed_total += result.changed
    subject.requests_total += result.requests
    return result


def warm_up(subject: Subject, args: argparse.Namespace) -> None:
    """Caches (each device's first request verifies its password), Kafka producer ids, allocators.
    Repeated while anything but 2.04 comes back (the first verifications may be answered 5.03)."""
    for _ in range(5):
        before = subject.server_cpu
        result = run(subject, args, messages=20 * len(subject.authorizations))
        subject.server_cpu = before
        if result.changed == result.requests:
            return
    raise SystemExit(f"{subject.name}: warm-up still failing: {result.codes}, {result.lost} lost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="POSTs per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=100, help="one UDP client per device")
    parser.add_argument("--window", type=int, default=1, help="CON requests in flight per client")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--time-limit", type=float, default=60, help="seconds per run at most")
    args = parser.parse_args()
    h.raise_nofile()
    load_before = os.getloadavg()[0]
    with h.kafka() as bootstrap:
        bare_topic = f"bench-coap-bare-{os.getpid()}"  # fresh even on a broker kept between runs
        h.create_topic(bootstrap, bare_topic)
        kafka_pid = h.listener_pid(int(bootstrap.rsplit(":", 1)[1]))
        coap_port = free_udp_port()
        serve_env = {"HAWSER_SERVICES": '["coap-endpoint", "api"]', "HAWSER_COAP__HOST": "127.0.0.1",
                     "HAWSER_COAP__PORT": str(coap_port), "HAWSER_COAP__DTLS_PORT": "-1"}
        bare_argv = [str(BENCH / "_coap_bare.py"), bootstrap, bare_topic, str(args.devices)]
        with h.hawser(bootstrap, **serve_env) as gw, server(bare_argv) as (bare, bare_line):
            devices = h.provision_device(gw, extra_devices=args.devices - 1)
            authorizations = [
                "Basic " + base64.b64encode(f"{name}@{h.APP}:{h.PASSWORD}".encode()).decode() for name in devices
            ]
            hawser = Subject("hawser (Kafka)", coap_port, gw.pid, authorizations)
            # The reference checks no credentials; it gets the same requests all the same.
            reference = Subject("bare aiocoap+kafka", int(bare_line[1]), bare.pid, authorizations)
            subjects = [hawser, reference]
            for subject in subjects:
                warm_up(subject, args)
            kafka_cpu = 0.0
            for _ in range(args.rounds):
                for subject in subjects:
                    before = h.cpu_seconds(kafka_pid) if kafka_pid else 0.0
                    subject.runs.append(run(subject, args, args.messages))
                    if kafka_pid and subject is hawser:
                        kafka_cpu += h.cpu_seconds(kafka_pid) - before
        in_kafka = asyncio.run(count_events(bootstrap, f"events-{h.APP}"))

    print(f"machine: {os.cpu_count()} cores; {args.devices} UDP clients (one per device) x {args.window} confirmable "
          f"POST(s) in flight, {len(load.PAYLOAD)}-byte JSON; {args.processes} load process(es); {args.rounds} rounds "
          f"x {args.messages} messages per server, alternating; load average before: {load_before:.2f}")
    print(f"{'server':22}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU-s/1000':>12}{'server CPU':>12}{'load CPU':>10}"
          f"{'errors':>8}{'retransm.':>11}")
    failed = False
    for s in subjects:
        merged = s.merged()
        errors = sum(merged.codes.values()) + merged.lost + merged.unfinished
        failed = failed or errors > 0
        print(f"{s.name:22}{s.rate:>9.0f}{merged.percentile(50):>9.2f}{merged.percentile(99):>9.2f}"
              f"{1000 * s.server_cpu / merged.changed:>12.4f}{s.server_cpu / merged.seconds:>11.0%}"
              f"{merged.generator_cpu_s / merged.seconds:>10.0%}{errors:>8}{merged.retransmissions:>11}")
        if errors:
            print(f"  errors of {s.name}: replies {merged.codes}, {merged.lost} lost after retransmissions, "
                  f"{merged.unfinished} not sent within the time limit")
    print(f"ratio hawser/bare: {hawser.rate / reference.rate:.2f}   (target >= 0.70)")
    print("per run (msg/s): " + "; ".join(f"{s.name} " + ", ".join(f"{r.rate:.0f}" for r in s.runs) for s in subjects))
    if kafka_pid:
        print(f"Kafka broker CPU while Hawser ran: {1000 * kafka_cpu / hawser.merged().changed:.4f} CPU-s per 1,000 "
              "messages")
    print(f"device events in Kafka: {in_kafka} for {hawser.changed_total} 2.04 replies from Hawser "
          f"({hawser.requests_total} requests)")
    # A request whose reply was lost may still have been published: equality holds when none was lost.
    if not hawser.changed_total <= in_kafka <= hawser.requests_total:
        print("WARNING: Kafka does not hold the acknowledged events; the figures above are not valid")
        failed = True
    if failed:
        print("WARNING: some requests failed; the figures above are not valid")
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
