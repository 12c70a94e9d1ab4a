"""HTTP publish throughput: Hawser against a bare Starlette endpoint doing the same aiokafka send.

Both run as their own process on the same real Kafka, and wrk (one thread, C) drives them with the
same small JSON POST from concurrent connections; Hawser's requests carry Basic auth. Rounds
alternate between the two so that drift of the machine hits both alike. Prints both rates, their
ratio, p50/p99 latency and Hawser's CPU-seconds per 1,000 messages. Targets: ratio >= 0.8 and
>= 2,000 msg/s through Hawser.

    .venv/bin/python bench/http_publish.py [--seconds 10] [--connections 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with h.kafka() as bootstrap:
        h.create_topic(bootstrap, "bench-bare")
        bare_port = h.free_port()
        bare = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_bare_endpoint.py"),
                                 bootstrap, "bench-bare", str(bare_port)])
        try:
            with h.hawser(bootstrap) as gw:
                h.provision_device(gw)
                h.wait_http(f"http://127.0.0.1:{bare_port}/")
                hawser_url = f"http://127.0.0.1:{gw.http_port}/v1/telemetry"
                bare_url = f"http://127.0.0.1:{bare_port}/v1/telemetry"
                # Warm both up (JIT-less Python still fills caches, Kafka creates producer ids).
                h.wrk(hawser_url, seconds=2, connections=args.connections, authorization=h.basic_auth())
                h.wrk(bare_url, seconds=2, connections=args.connections)
                hawser_runs, bare_runs, cpu = [], [], 0.0
                for _ in range(args.rounds):
                    before = h.cpu_seconds(gw.pid)
                    hawser_runs.append(h.wrk(hawser_url, seconds=args.seconds, connections=args.connections,
                                             authorization=h.basic_auth()))
                    cpu += h.cpu_seconds(gw.pid) - before
                    bare_runs.append(h.wrk(bare_url, seconds=args.seconds, connections=args.connections))
        finally:
            bare.terminate()
            bare.wait(30)

    def summary(runs: list[h.WrkResult]) -> tuple[float, float, float, int, int]:
        rate = sum(r.rate for r in runs) / len(runs)
        return (rate, max(r.p50_ms for r in runs), max(r.p99_ms for r in runs),
                sum(r.errors for r in runs), sum(r.requests for r in runs))

    h_rate, h_p50, h_p99, h_err, h_total = summary(hawser_runs)
    b_rate, b_p50, b_p99, b_err, _ = summary(bare_runs)
    print(f"machine: {os.cpu_count()} cores; wrk -t1 -c{args.connections}, {args.rounds}x{args.seconds}s each")
    print(f"{'':22}{'msg/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    print(f"{'hawser (auth+CE)':22}{h_rate:>10.0f}{h_p50:>10.2f}{h_p99:>10.2f}{h_err:>8}")
    print(f"{'bare starlette+kafka':22}{b_rate:>10.0f}{b_p50:>10.2f}{b_p99:>10.2f}{b_err:>8}")
    print(f"ratio hawser/bare: {h_rate / b_rate:.2f}   (target >= 0.80)")
    print(f"hawser rate: {h_rate:.0f} msg/s   (target >= 2000)")
    print(f"hawser CPU: {1000 * cpu / max(h_total, 1):.3f} CPU-seconds per 1,000 messages")
    if h_err or b_err:
        print("WARNING: some requests failed; the figures above are not valid")
        sys.exit(1)


if __name__ == "__main__":
    main()
