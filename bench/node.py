"""Node-level figures: `veratur up` with N real workers behind Kamailio, driven by sipp through the front door.

Prints: RSS per worker (idle and after calls), INVITE->200 set-up time through Kamailio (p50/p95/max), Kamailio
CPU while N calls are set up, held and torn down, the cost of rejecting INVITEs with 503 while the node is full,
and the time from killing a worker to its replacement answering OPTIONS.

    .venv/bin/python bench/node.py --workers 5 --calls 20
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit.node import Node, caller_scenario, run_node, start_calls, write_settings  # noqa: E402
from testkit.pcaps import silence_pcm, tone_pcm, write_pcmu_pcap  # noqa: E402
from testkit.ports import HOST  # noqa: E402
from testkit.rawsip import RawSip  # noqa: E402
from veratur import kamailio  # noqa: E402


def kamailio_cpu_s(node: Node) -> float:
    total = 0.0
    for proc in node.tree():
        try:
            if proc.name() == "kamailio":
                t = proc.cpu_times()
                total += t.user + t.system
        except Exception:  # noqa: BLE001 - a process that just ended counts nothing
            continue
    return total


def loads(node: Node) -> dict[str, int]:
    states = asyncio.run(kamailio.worker_states(kamailio.KamailioPaths.for_settings(node.settings)))
    return {duid: load for duid, (_, load) in states.items()}


def wait_total(node: Node, total: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(loads(node).values()) == total:
            return
        time.sleep(0.2)
    raise SystemExit(f"loads never reached {total}: {loads(node)}")


def rtt_ms(logs: Path) -> list[float]:
    values: list[float] = []
    for path in logs.glob("*_rtt.csv"):
        with path.open() as f:
            for row in csv.DictReader(f, delimiter=";"):
                try:
                    values.append(float(row["response_time_ms"]))
                except (KeyError, ValueError):
                    continue
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls (at most workers x 4)")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    parser.add_argument("--hold-ms", type=int, default=10000)
    parser.add_argument("--reject-burst", type=int, default=2000, help="INVITEs sent while full (paced 2/ms)")
    parser.add_argument("--app", default="engine")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="veratur-bench-node-"))
    logs = tmp / "logs"
    logs.mkdir()
    config, settings = write_settings(tmp, sip={"workers": args.workers, "new_calls_per_second": 1000},
                                      asr={"model": "ko-test"})
    pcap = write_pcmu_pcap(tmp / "caller.pcap", silence_pcm(0.5) + tone_pcm(440, 1.0, 0.2) + silence_pcm(2.5))
    scenario = caller_scenario(tmp, pcap)
    started = time.monotonic()
    with run_node(config, settings, "--no-dialogue", "--no-web", "--ivr-app", args.app) as node:
        print(f"node up in {time.monotonic() - started:.1f} s with {args.workers} workers ({args.app})")
        workers = node.workers()
        rss_idle = {i: p.memory_info().rss / 2**20 for i, p in sorted(workers.items())}

        cpu0, t0 = kamailio_cpu_s(node), time.monotonic()
        calls = start_calls(settings, scenario, logs, "bench", calls=args.calls, hold_ms=args.hold_ms,
                            rate=args.rate)
        wait_total(node, args.calls)
        cpu_setup, t_setup = kamailio_cpu_s(node) - cpu0, time.monotonic() - t0
        rss_busy = {i: p.memory_info().rss / 2**20 for i, p in sorted(node.workers().items())}

        full = sum(loads(node).values()) >= args.workers * settings.sip.max_calls_per_worker
        reject = {}
        if full:
            cpu1, t1 = kamailio_cpu_s(node), time.monotonic()
            with RawSip(HOST, settings.sip.port) as raw:
                raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                for n in range(args.reject_burst):
                    raw.send(raw.invite_packet())
                    if n % 2:
                        time.sleep(0.001)       # ~1000 INVITE/s: Kamailio's socket buffer is not the limit
                answers = raw.collect(args.reject_burst, 10.0)
            time.sleep(0.5)
            reject = {"sent": args.reject_burst, "codes": sorted(set(answers.codes())),
                      "answered": len(answers.finals),
                      "retry_after": all(b"Retry-After:" in m for _, _, m in answers.finals),
                      "kamailio_cpu_ms_per_reject": 1000 * (kamailio_cpu_s(node) - cpu1) / args.reject_burst,
                      "s": time.monotonic() - t1}
        calls.wait(args.hold_ms / 1000 + 120)
        wait_total(node, 0)
        cpu_all, t_all = kamailio_cpu_s(node) - cpu0, time.monotonic() - t0

        victim = node.workers()[0]
        mark = len(node.stderr)
        killed = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        node.wait_for(r"event=child_ready child=ivr-0 ", 120, start=mark)
        restart_s = time.monotonic() - killed

    rtts = sorted(rtt_ms(logs))
    print(f"workers RSS idle MB:   {', '.join(f'{v:.0f}' for v in rss_idle.values())}")
    print(f"workers RSS busy MB:   {', '.join(f'{v:.0f}' for v in rss_busy.values())}  "
          f"(~{statistics.mean(rss_busy.values()):.0f} MB per worker, "
          f"{sum(rss_busy.values()) / args.calls:.0f} MB per call at {args.calls} calls)")
    if rtts:
        p95 = rtts[min(len(rtts) - 1, int(0.95 * len(rtts)))]
        print(f"INVITE->200 via Kamailio: p50 {statistics.median(rtts):.0f} ms, p95 {p95:.0f} ms, "
              f"max {rtts[-1]:.0f} ms ({len(rtts)} calls)")
    print(f"Kamailio CPU, {args.calls} calls set up at {args.rate}/s: {1000 * cpu_setup:.0f} ms in {t_setup:.1f} s "
          f"= {1000 * cpu_setup / args.calls:.1f} ms per call set-up")
    print(f"Kamailio CPU over the whole run ({t_all:.1f} s, {args.calls} calls held {args.hold_ms} ms): "
          f"{100 * cpu_all / t_all:.1f} % of one core")
    if reject:
        print(f"503 while full: {reject['answered']}/{reject['sent']} answered, codes {reject['codes']}, "
              f"Retry-After on all: {reject['retry_after']}, "
              f"{reject['kamailio_cpu_ms_per_reject']:.2f} ms Kamailio CPU per rejected INVITE")
    print(f"worker restart (SIGKILL -> answering OPTIONS again): {restart_s:.1f} s")
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
