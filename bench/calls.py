"""N concurrent real SIP calls with speech and DTMF; prints turn latency, calls held, CPU, RSS, ASR speed.

    .venv/bin/python bench/calls.py --calls 4                       # starts 1 worker (demo app) itself
    .venv/bin/python bench/calls.py --calls 20 --app engine         # 5 workers with the real engine
    .venv/bin/python bench/calls.py --calls 40 --app engine --recognition builtin   # + one asr-service
    .venv/bin/python bench/calls.py --calls 20 --uri sip:veratur@127.0.0.1:5060 \\
        --metrics http://127.0.0.1:9101/metrics,http://127.0.0.1:9102/metrics   # through Kamailio (veratur up)

Callers are `veratur call --json` processes (pjsua2, at most 4 calls each). Turn latency = end of the caller's
speech in the sent audio (or the last DTMF digit sent) -> first voiced reply frame out of the caller's jitter
buffer. Worker CPU and RSS come from psutil for workers this script starts, else from their /metrics
(process_cpu_seconds_total, process_resident_memory_bytes). Nothing here asserts: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
VERATUR = REPO / ".venv" / "bin" / "veratur"
CALLS_PER_PROCESS = 4
DEFAULT_SAY = ("quiero información sobre el registro civil", "sí, por favor")
SAMPLE_S = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def total(metrics: list[dict[str, float]], name: str) -> float:
    return sum(m.get(name, 0.0) for m in metrics)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Workers:
    """Workers started here (pids known) or given (metrics URLs only)."""

    uris: list[str]
    metrics_urls: list[str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    service: subprocess.Popen[str] | None = None
    """The recognition service started here (--recognition builtin): its RSS and CPU are reported too."""

    @classmethod
    def start(cls, count: int, app: str, env: dict[str, str]) -> Workers:
        procs: list[subprocess.Popen[str]] = []
        uris: list[str] = []
        urls: list[str] = []
        for index in range(count):
            port = free_port()
            proc = subprocess.Popen([str(VERATUR), "ivr", "--index", str(index), "--port", "0", "--metrics-port",
                                     str(port), "--app", app], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, env={**os.environ, **env}, cwd=REPO)
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}/metrics")
        workers = cls(uris, urls, procs)
        try:
            for proc in procs:
                assert proc.stdout is not None
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    line = proc.stdout.readline()
                    if not line:
                        raise SystemExit("a worker exited before it was ready (try it alone: veratur ivr --port 0)")
                    m = re.search(r"sip=(sip:\S+)", line)
                    if m:
                        uris.append(m.group(1))
                        break
        except BaseException:
            workers.stop()          # the ones already up would outlive the bench
            raise
        return workers

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def metrics(self) -> list[dict[str, float]]:
        return [scrape(url) for url in self.metrics_urls]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=4, help="concurrent calls")
    ap.add_argument("--uri", help="call this SIP URI (e.g. Kamailio's front door) instead of starting workers")
    ap.add_argument("--metrics", default="", help="with --uri: comma-separated /metrics URLs of the workers")
    ap.add_argument("--app", default="testkit.demo_handler:factory", help="handler of workers started here")
    ap.add_argument("--workers", type=int, help="workers to start (default: calls / 4, rounded up)")
    ap.add_argument("--say", action="append", help="caller utterances, in order (default: two Spanish phrases)")
    ap.add_argument("--dtmf", default="1", help="digits keyed after the utterances ('' for none)")
    ap.add_argument("--stagger", type=float, default=0.25, help="seconds between call starts")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for workers started here (e.g. VERATUR__ASR__MODEL=ko-test)")
    ap.add_argument("--recognition", choices=("config", "in_worker", "builtin"), default="config",
                    help="workers started here decode in their own pool (in_worker) or stream to one `veratur "
                         "asr-service` started here (builtin; its RSS and CPU are reported with the workers'); "
                         "config: as config/veratur.yml says")
    args = ap.parse_args()
    args.load_start = os.getloadavg()        # the machine may be shared: every figure goes with its load

    env = dict(item.split("=", 1) for item in args.env)
    service: subprocess.Popen[str] | None = None
    if args.uri:
        workers = Workers([args.uri], [u for u in args.metrics.split(",") if u])
    else:
        if args.recognition != "config":
            env["VERATUR__RECOGNITION_SERVICE__MODE"] = args.recognition
        if args.recognition == "builtin":
            service, env["VERATUR__RECOGNITION_SERVICE__URL"] = start_service(env)
        count = args.workers or math.ceil(args.calls / CALLS_PER_PROCESS)
        print(f"starting {count} worker(s) (--app {args.app}, recognition {args.recognition}) ...", flush=True)
        try:
            workers = Workers.start(count, args.app, env)
        except BaseException:
            if service is not None:
                service.terminate()
            raise
        if service is not None:
            workers.service = service
    try:
        return run(args, workers)
    finally:
        workers.stop()
        if service is not None:
            service.terminate()
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()


def start_service(env: dict[str, str], timeout: float = 180.0) -> tuple[subprocess.Popen[str], str]:
    """`veratur asr-service` on a free port, once it accepts connections (it loads its models first)."""
    port = free_port()
    print(f"starting the recognition service on 127.0.0.1:{port} ...", flush=True)
    proc = subprocess.Popen([str(VERATUR), "asr-service", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **env}, cwd=REPO)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"veratur asr-service exited with {proc.returncode} (try it alone)")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"ws://127.0.0.1:{port}"
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"veratur asr-service did not listen on {port} within {timeout:.0f} s")


def run(args: argparse.Namespace, workers: Workers) -> int:
    says = args.say or list(DEFAULT_SAY)
    steps: list[str] = []
    for text in says:
        steps += ["--say", text]
    if args.dtmf:
        steps += ["--dtmf", args.dtmf]
    n_procs = math.ceil(args.calls / CALLS_PER_PROCESS)
    worker_ps = [psutil.Process(p.pid) for p in workers.procs]
    service_p = psutil.Process(workers.service.pid) if workers.service is not None else None
    for p in worker_ps + ([service_p] if service_p else []):
        p.cpu_percent(None)
    service_rss = 0.0
    service_cpu: list[float] = []
    before = workers.metrics()
    cpu_before = total(before, "process_cpu_seconds_total")
    t0 = time.monotonic()
    callers: list[subprocess.Popen[str]] = []
    remaining = args.calls
    for i in range(n_procs):
        k = min(CALLS_PER_PROCESS, remaining)
        remaining -= k
        uri = workers.uris[i % len(workers.uris)]
        callers.append(subprocess.Popen(
            [str(VERATUR), "call", uri, "--json", "--calls", str(k), "--wait", "1", *steps],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO))
        time.sleep(args.stagger * k)
    held = 0.0
    rss_peak = 0.0
    cpu_samples: list[float] = []
    while any(c.poll() is None for c in callers):
        time.sleep(SAMPLE_S)
        now = workers.metrics()
        held = max(held, total(now, "veratur_calls_active"))
        if worker_ps:
            rss_peak = max(rss_peak, sum(p.memory_info().rss for p in worker_ps if p.is_running()))
            cpu_samples.append(sum(p.cpu_percent(None) for p in worker_ps if p.is_running()))
        if service_p is not None and service_p.is_running():
            service_rss = max(service_rss, service_p.memory_info().rss)
            service_cpu.append(service_p.cpu_percent(None))
        else:
            rss_peak = max(rss_peak, total(now, "process_resident_memory_bytes"))
    elapsed = time.monotonic() - t0
    after = workers.metrics()
    results = []
    for caller in callers:
        out, err = caller.communicate()
        results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if caller.returncode != 0:
            print(f"caller exited {caller.returncode}: {err.strip()[-300:]}", file=sys.stderr)
    report(args, results, before, after, held, rss_peak, cpu_samples, cpu_before, elapsed)
    if service_p is not None:
        busy = [c for c in service_cpu if c > 0] or service_cpu or [0.0]
        print(f"recognition service: RSS {service_rss / 2**20:.0f} MiB, CPU mean {statistics.mean(busy):.1f} % "
              f"peak {max(busy):.1f} % of one core")
        node = rss_peak + service_rss
        print(f"node RSS (workers + recognition service): {node / 2**20:.0f} MiB, "
              f"{node / max(held, 1) / 2**20:.1f} MiB per call held")
    return 0


def histogram_quantiles(before: list[dict[str, float]], after: list[dict[str, float]], name: str,
                        ps: tuple[int, ...]) -> dict[int, str]:
    """Quantiles of a Prometheus histogram over the run (bucket deltas summed over the workers), interpolated
    inside the bucket; past the last finite bucket: '> its bound'."""
    bounds: dict[float, float] = {}
    prefix = f'{name}_bucket{{le="'
    for key in {k for m in after for k in m if k.startswith(prefix)}:
        le = float(key[len(prefix):-2])
        bounds[le] = total(after, key) - total(before, key)
    if not bounds or not bounds.get(math.inf):
        return {}
    count = bounds[math.inf]
    edges = sorted(bounds)
    out: dict[int, str] = {}
    for p in ps:
        rank = count * p / 100
        lo_edge, lo_count = 0.0, 0.0
        for edge in edges:
            if bounds[edge] >= rank:
                if math.isinf(edge):
                    out[p] = f"> {lo_edge * 1000:.0f} ms"
                else:
                    frac = (rank - lo_count) / max(bounds[edge] - lo_count, 1e-9)
                    out[p] = f"{(lo_edge + (edge - lo_edge) * frac) * 1000:.0f} ms"
                break
            lo_edge, lo_count = edge, bounds[edge]
    return out


def report(args: argparse.Namespace, results: list[dict], before: list[dict[str, float]],  # type: ignore[type-arg]
           after: list[dict[str, float]], held: float, rss_peak: float, cpu_samples: list[float],
           cpu_before: float, elapsed: float) -> None:
    ok = [r for r in results if r["status"] == 200]
    speech = [t["latency_ms"] for r in ok for t in r["turns"] if t["kind"] in ("say", "wav") and t["latency_ms"]]
    dtmf = [t["latency_ms"] for r in ok for t in r["turns"] if t["kind"] == "dtmf" and t["latency_ms"]]
    turns = sum(len(r["turns"]) for r in ok)
    unanswered = sum(1 for r in ok for t in r["turns"] if t["latency_ms"] is None)

    def delta(name: str) -> float:
        return total(after, name) - total(before, name)

    print(f"\n== {args.calls} concurrent calls, {len(ok)}/{len(results)} answered, {elapsed:.1f} s wall ==")
    print(f"calls held at once (workers' calls_active): {held:.0f}")
    for label, values in (("speech", speech), ("dtmf", dtmf), ("all", speech + dtmf)):
        if values:
            print(f"turn latency {label:6}: p50 {percentile(values, 50):6.0f} ms  p95 {percentile(values, 95):6.0f} ms"
                  f"  max {max(values):6.0f} ms  (n={len(values)})")
    print(f"turns without a reply: {unanswered}/{turns}")
    holds, dropped = delta("veratur_asr_hold_total"), delta("veratur_asr_final_dropped_total")
    answer = histogram_quantiles(before, after, "veratur_turn_latency_seconds", (50, 95))
    if answer:
        # the workers' own clock: end of input -> the ANSWER's first audio queued (a hold phrase is not an answer)
        print("engine turn latency to the answer (speech + keypad, histogram buckets): "
              + "  ".join(f"p{p} {v}" for p, v in answer.items()))
    if holds or dropped:
        # a hold phrase or a keypad question is the first reply audio the caller hears for that turn
        print(f"recognizer overload: {holds:.0f} hold phrases (final past asr.max_wait_ms), {dropped:.0f} decodes "
              f"dropped and the keypad asked (past asr.max_wait_keypad_ms)")
    print("load average (1/5/15 min) at start {} and end {}".format(
        "/".join(f"{x:.2f}" for x in args.load_start), "/".join(f"{x:.2f}" for x in os.getloadavg())))
    if cpu_samples:
        busy = [c for c in cpu_samples if c > 0] or cpu_samples
        print(f"worker CPU: mean {statistics.mean(busy):.1f} %  peak {max(cpu_samples):.1f} % of one core "
              f"(machine has {psutil.cpu_count()} cores)")
    else:
        cpu_s = total(after, "process_cpu_seconds_total") - cpu_before
        print(f"worker CPU: {100 * cpu_s / elapsed:.1f} % of one core (average over the run, from /metrics)")
    if rss_peak:
        per_call = rss_peak / max(held, 1)
        print(f"worker RSS: total {rss_peak / 2**20:.0f} MiB, per call held {per_call / 2**20:.1f} MiB")
    frames_rx, frames_tx = delta('veratur_sip_frames_total{direction="rx"}'), delta('veratur_sip_frames_total{direction="tx"}')
    if frames_rx:
        rx_us = 1e6 * delta('veratur_sip_frame_callback_seconds_total{direction="rx"}') / frames_rx
        tx_calls = frames_tx + delta("veratur_sip_tx_underruns_total")
        tx_us = 1e6 * delta('veratur_sip_frame_callback_seconds_total{direction="tx"}') / max(tx_calls, 1)
        print(f"per-frame callback: rx {rx_us:.1f} µs, tx {tx_us:.1f} µs ({frames_rx:.0f} rx frames)")
    rtf_n = delta("veratur_asr_real_time_factor_count")
    if rtf_n:
        print(f"ASR real-time factor: mean {delta('veratur_asr_real_time_factor_sum') / rtf_n:.3f} "
              f"over {rtf_n:.0f} chunks (decode time / audio time; < 1 keeps up)")
    else:
        print("ASR real-time factor: no decoding reported (demo app, or no speech reached the recognizer)")


if __name__ == "__main__":
    sys.exit(main())
