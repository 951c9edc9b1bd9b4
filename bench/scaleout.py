"""Scale-out figures on one machine: a front node and 1, then 2 media nodes, each `veratur up --role ...` in its
own network namespace (testkit.scaleout), sipp from a caller namespace through the front door.

Prints, for each media node joining: the time from `veratur up --role media` to its banner (workers answering and
registered), to every worker active in the front door's dispatcher, and to the first call it answered; then, for 1
and for 2 media nodes, the calls held at once (more calls are offered than fit: the rest get 503) and the mean
INVITE->200 set-up time through the front door. Both media nodes share the machine's cores, so the figure to read
is the ratio, not the absolute capacity. The workers run the SIP-only demo handler: turn latency (speech and
dialogue) is not part of these figures (bench/node.py and bench/voice_calls.py measure it on one node).

    sudo .venv/bin/python bench/scaleout.py              # root: it creates network namespaces
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit import netns  # noqa: E402
from testkit.node import Node  # noqa: E402
from testkit.scaleout import CALLS_PER_WORKER, WORKERS, Cluster, active, dispatched, load  # noqa: E402


def mean_setup_ms(stat_csv: Path) -> float | None:
    """sipp's cumulative mean INVITE->200 time (ResponseTime1(C)) from the last -trace_stat line."""
    with stat_csv.open() as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    if not rows:
        return None
    value = rows[-1].get("ResponseTime1(C)", "")
    try:
        h, m, s, us = (int(x) for x in value.split(":"))
    except ValueError:
        return None
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def held(cluster: Cluster, name: str, offered: int, hold_ms: int) -> tuple[int, int, float | None]:
    """(peak calls the front door counted, calls completed, mean set-up ms) for `offered` calls held hold_ms."""
    proc = cluster.calls(name, calls=offered, hold_ms=hold_ms, rate=20)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, load(cluster.dests()))
        time.sleep(0.3)
    ok, _ = cluster.counts(name, proc)
    return peak, ok, mean_setup_ms(cluster.tmp / "logs" / f"{name}.stat.csv")


def join(cluster: Cluster, front: Node, host: str, stack: contextlib.ExitStack) -> dict[str, float]:
    started = time.monotonic()
    stack.enter_context(cluster.run(host))
    banner = time.monotonic() - started
    cluster.wait(f"{host} in rotation", lambda: active(cluster.of(host)), timeout_s=60)
    rotation = time.monotonic() - started
    address = cluster.topo.address(host)
    # One call at a time until the front door sends one to the new node (call load picks the least loaded).
    first = None
    for attempt in range(20):
        mark = len(front.stderr)
        proc = cluster.calls(f"join-{host}-{attempt}", calls=1, hold_ms=200)
        ok, _ = cluster.counts(f"join-{host}-{attempt}", proc)
        if ok and address in dispatched(front, mark):
            first = time.monotonic() - started
            break
    return {"banner_s": banner, "in_rotation_s": rotation, "first_call_s": first or float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold-ms", type=int, default=6000)
    args = parser.parse_args()
    why = netns.unavailable()
    if why:
        print(f"bench/scaleout.py: {why}", file=sys.stderr)
        return 2
    capacity = WORKERS * CALLS_PER_WORKER
    with tempfile.TemporaryDirectory() as tmp, netns.topology(["front", "m1", "m2", "caller"]) as topo, \
            contextlib.ExitStack() as stack:
        cluster = Cluster(Path(tmp), topo)
        front = stack.enter_context(cluster.run("front"))
        print(f"media node: {WORKERS} demo workers x {CALLS_PER_WORKER} calls = {capacity} calls")
        j1 = join(cluster, front, "m1", stack)
        print(f"m1 joins:  banner {j1['banner_s']:.1f} s, in rotation {j1['in_rotation_s']:.1f} s, "
              f"first call answered {j1['first_call_s']:.1f} s after start")
        one = held(cluster, "one", offered=capacity + 4, hold_ms=args.hold_ms)
        print(f"1 media node:  {one[0]} calls held at once ({one[1]} of {capacity + 4} offered completed), "
              f"mean set-up {one[2] or float('nan'):.1f} ms")
        j2 = join(cluster, front, "m2", stack)
        print(f"m2 joins:  banner {j2['banner_s']:.1f} s, in rotation {j2['in_rotation_s']:.1f} s, "
              f"first call answered {j2['first_call_s']:.1f} s after start")
        two = held(cluster, "two", offered=2 * capacity + 4, hold_ms=args.hold_ms)
        print(f"2 media nodes: {two[0]} calls held at once ({two[1]} of {2 * capacity + 4} offered completed), "
              f"mean set-up {two[2] or float('nan'):.1f} ms")
        print(f"ratio 2/1 nodes: calls held {two[0] / max(one[0], 1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
