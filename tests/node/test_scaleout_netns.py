"""Scale-out for real: one front node and two media nodes, each `veratur up --role ...` in its own network
namespace on one bridge (testkit.netns), sipp calling from a fourth namespace. The media nodes register their
workers with the front door over its Kamailio RPC (TCP); nobody lists them in a file.

- kill -9 one media node's workers while calls are up: only that node's calls end (the front door BYEs them), new
  calls go to the other node, the killed workers come back and are in rotation again;
- `veratur node drain` on a media node while calls are up: no call is dropped, new calls go to the other node,
  the drained node stops and leaves the dispatcher; started again, it rejoins (the other node's call count at the
  front door is kept) and takes calls.

The workers run the SIP-only demo handler (routing across hosts is what is tested here; the engine is covered by
tests/node/test_node_up.py). All nodes share one SQLite case file (the namespaces share the file system)."""
from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testkit import netns
from testkit.node import Node
from testkit.scaleout import CALLS_PER_WORKER, WORKERS, Cluster, active, dispatched, load

pytestmark = [pytest.mark.sip, pytest.mark.slow]

WHY_NOT = netns.unavailable()
if WHY_NOT:
    pytestmark.append(pytest.mark.skip(reason=f"scale-out topology in network namespaces: {WHY_NOT}"))

HOSTS = ["front", "m1", "m2", "caller"]
BUSY_HOLD_MS = 120_000


@pytest.fixture(scope="module")
def topo() -> Iterator[netns.Topology]:
    with netns.topology(HOSTS) as t:
        yield t


@contextlib.contextmanager
def cluster_up(tmp_path: Path, topo: netns.Topology) -> Iterator[tuple[Cluster, Node, Node, Node]]:
    c = Cluster(tmp_path, topo)
    with c.run("front") as front, c.run_together("m1", "m2") as (m1, m2):
        assert "media node: registered with the front door(s)" in "".join(m1.stdout)
        c.wait("both media nodes in rotation", lambda: active(c.of("m1")) and active(c.of("m2")))
        yield c, front, m1, m2


def test_killed_media_workers_lose_only_their_calls(tmp_path: Path, topo: netns.Topology) -> None:
    with cluster_up(tmp_path, topo) as (c, front, m1, m2):
        held = c.calls("held", calls=8, hold_ms=10000)
        c.wait("8 calls up", lambda: load(c.dests()) == 8)
        on_m1, on_m2 = load(c.of("m1")), load(c.of("m2"))
        assert on_m1 and on_m2, c.dests()                 # call load spreads them over both nodes
        mark = len(m1.stderr)
        victims = list(m1.workers().values())
        for proc in victims:
            proc.send_signal(signal.SIGKILL)
        # The media node's supervisor takes its dead workers out at the front door at once.
        c.wait("m1's workers out", lambda: all(d.flags.startswith("I") for d in c.of("m1")), timeout_s=20)
        front_mark = len(front.stderr)
        fresh = c.calls("fresh", calls=4, hold_ms=2000)
        assert c.counts("fresh", fresh) == (4, 0)
        assert set(dispatched(front, front_mark)) == {topo.address("m2")}
        # Only m1's calls ended (the front door BYEd them); m2's were held to the end.
        assert c.counts("held", held) == (on_m2, on_m1)
        assert re.search(r"event=dialogs_ended worker=\d dialogs=[1-9]", "".join(m1.stderr[mark:]))
        # The killed workers are restarted and back in rotation.
        c.wait("m1 back", lambda: active(c.of("m1")), timeout_s=90)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in victims)


def test_drain_drops_no_call_and_the_node_rejoins(tmp_path: Path, topo: netns.Topology) -> None:
    with cluster_up(tmp_path, topo) as (c, front, m1, m2):
        held = c.calls("held", calls=8, hold_ms=8000)
        c.wait("8 calls up", lambda: load(c.dests()) == 8)
        on_m1 = load(c.of("m1"))
        assert on_m1, c.dests()
        cfg, _ = c.media["m1"]
        drain = subprocess.Popen(
            topo.argv("m1", [sys.executable, "-m", "veratur.cli", "--config", str(cfg), "node", "drain"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        c.wait("m1 disabled", lambda: all(d.flags.startswith("D") for d in c.of("m1")), timeout_s=20)
        front_mark = len(front.stderr)
        fresh = c.calls("fresh", calls=4, hold_ms=1000)
        assert c.counts("fresh", fresh) == (4, 0)
        assert set(dispatched(front, front_mark)) == {topo.address("m2")}
        out, _ = drain.communicate(timeout=120)
        assert drain.returncode == 0, out
        assert "drained and stopped" in out
        assert c.counts("held", held) == (8, 0)            # zero dropped: m1's calls ended by themselves
        assert m1.proc.wait(30) == 0
        assert re.search(r"Drained: 0 call\(s\) left", "".join(m1.stdout))
        c.wait("m1 left the dispatcher", lambda: not c.of("m1"), timeout_s=20)
        # m2 alone holds a full load; m1 rejoins meanwhile: the front door's count of m2's calls survives the
        # dispatcher.add (a dispatcher.reload would zero it), and the next calls can only go to m1. The full load is
        # held longer than any start of m1 can take, and let go once that is checked.
        busy = c.calls("busy", calls=WORKERS * CALLS_PER_WORKER, hold_ms=BUSY_HOLD_MS)
        try:
            c.wait("m2 full", lambda: load(c.of("m2")) == WORKERS * CALLS_PER_WORKER)
            with c.run("m1"):
                c.wait("m1 rejoined", lambda: active(c.of("m1")))
                assert busy.poll() is None                  # m2's calls are still up
                assert load(c.of("m2")) == WORKERS * CALLS_PER_WORKER, c.dests()
                front_mark = len(front.stderr)
                again = c.calls("again", calls=4, hold_ms=2000)
                assert c.counts("again", again) == (4, 0)
                assert set(dispatched(front, front_mark)) == {topo.address("m1")}
        finally:
            c.stop_calls(busy)
