"""`veratur node`: scale-out operations on a running node.

`node drain`: the node's `veratur up` (pid in <data_dir>/veratur-up.pid) takes its workers out of the front
doors' rotation (dispatcher state "d": no new calls, in-dialog requests still pass), waits until the front doors
count no call on them (at most node.drain_timeout_s), then stops; its workers leave the dispatchers. Start it
again (`veratur up --role media`) and it rejoins. This command waits until the node has stopped.
`node status`: the dispatcher destinations as each front door sees them (this node's own Kamailio on a front
node, node.front_doors on a media node).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from foundation.config import Settings
from veratur import kamailio
from veratur.supervisor import STOP_MARGIN_S, pid_file

POLL_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    drain = sub.add_parser("drain", help="no new calls for this node; let its calls end; then stop it")
    drain.add_argument("--timeout", type=float,
                       help="seconds to wait for the node to stop (default node.drain_timeout_s + "
                            "sip.shutdown_grace_s + a margin)")
    drain.add_argument("--no-wait", action="store_true", help="ask for the drain and return at once")
    sub.add_parser("status", help="dispatcher destinations (state, calls) at each front door")


def _running_pid(settings: Settings) -> int | None:
    path = pid_file(settings)
    try:
        pid = int(path.read_text(encoding="utf-8").split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _alive(pid: int) -> bool:
    """The node's process still runs (an exited one its parent has not reaped yet is a zombie: gone for us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _drain(settings: Settings, args: argparse.Namespace) -> int:
    pid = _running_pid(settings)
    if pid is None:
        print(f"veratur node drain: no running node (no live pid in {pid_file(settings)})", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGUSR1)
    print(f"Drain requested for node {settings.node_name} (pid {pid}): no new calls; waiting for its calls to end",
          flush=True)
    if args.no_wait:
        return 0
    limit = args.timeout if args.timeout is not None else (
        settings.node.drain_timeout_s + settings.sip.shutdown_grace_s + 2 * STOP_MARGIN_S)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"Node {settings.node_name} drained and stopped; start it again to rejoin", flush=True)
            return 0
        time.sleep(POLL_S)
    print(f"veratur node drain: node still running after {limit:.0f} s", file=sys.stderr)
    return 1


def _targets(settings: Settings) -> list[str]:
    if settings.node.role == "media":
        return [kamailio.rpc_target(ip, settings.node.rpc_port) for ip in settings.node.front_doors]
    return [f"unix:{kamailio.KamailioPaths.for_settings(settings).ctl_socket}"]


def _status(settings: Settings) -> int:
    failed = 0
    for target in _targets(settings):
        try:
            dests = asyncio.run(kamailio.destinations_at(target))
        except kamailio.KamailioError as exc:
            print(f"{target}: unreachable ({exc})")
            failed += 1
            continue
        print(f"{target}: {len(dests)} destination(s)")
        for d in dests:
            print(f"  {d.uri:32} {d.duid:24} {d.flags:3} calls={d.load}")
    return 1 if failed else 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.node_command == "drain":
        return _drain(settings, args)
    return _status(settings)
