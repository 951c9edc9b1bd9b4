"""A scale-out cluster as a test or bench peer: one front node and media nodes, each `veratur up --role ...` in
its own network namespace (testkit.netns), sipp calling from a caller namespace through the front door.

The media nodes' workers run the SIP-only demo handler; all nodes share one SQLite case file (the namespaces
share the file system). The front door's dispatcher is read over its unix control socket (a file: reachable from
the machine's own namespace)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from foundation.config import Settings
from testkit import netns
from testkit.demo_handler import DEMO_APP
from testkit.node import Node, caller_scenario, run_node, write_settings
from testkit.sipp import screen_counts, sipp_binary
from veratur import kamailio

SIP_PORT = 5060
WORKERS = 2
CALLS_PER_WORKER = 4


def node_config(tmp_path: Path, topo: netns.Topology, host: str, **node: object) -> tuple[Path, Settings]:
    d = tmp_path / host
    d.mkdir()
    return write_settings(
        d, node_name=f"{host}-{topo.tag}", node=node,  # type: ignore[arg-type]
        sip={"bind_address": topo.address(host), "port": SIP_PORT, "worker_base_port": 5070, "workers": WORKERS,
             "allowed_peers": [topo.network], "shutdown_grace_s": 5.0,
             # sipp's callers send no RTP: without this the workers end every call after 30 s of silence
             "media_timeout_s": 600.0, "rtp_port_start": 20000,
             "rtp_port_range": 400, "new_calls_per_second": 50, "new_calls_per_source_per_second": 50},
        database={"url": f"sqlite:///{tmp_path / 'shared.db'}"}, asr={"model": "ko-test"})


class Cluster:
    """Configs for the front hosts and the media hosts of `topo`; nodes are started with run(host). With
    `shared_address` (two front doors) every front node listens on it and record-routes with it, and the media
    nodes take calls from it too."""

    def __init__(self, tmp_path: Path, topo: netns.Topology, media: tuple[str, ...] = ("m1", "m2"),
                 fronts: tuple[str, ...] = ("front",), shared_address: str | None = None) -> None:
        self.tmp, self.topo = tmp_path, topo
        extra: dict[str, object] = {"shared_address": shared_address} if shared_address else {}
        self.fronts = {h: node_config(tmp_path, topo, h, role="front", **extra) for h in fronts}
        self.front_cfg, self.front_settings = self.fronts[fronts[0]]
        self.media = {h: node_config(tmp_path, topo, h, role="media",
                                     front_doors=[topo.address(f) for f in fronts], register_interval_s=1.0,
                                     drain_timeout_s=60.0, **extra) for h in media}
        self.ctl = kamailio.KamailioPaths.for_settings(self.front_settings)
        self.media_base = 30000          # the caller namespace is this cluster's own: its ports need no probing
        (tmp_path / "logs").mkdir(exist_ok=True)

    def run(self, host: str) -> contextlib.AbstractContextManager[Node]:
        prefix = tuple(self.topo.argv(host, []))
        if host in self.fronts:
            cfg, settings = self.fronts[host]
            return run_node(cfg, settings, "--no-web", prefix=prefix)
        cfg, settings = self.media[host]
        return run_node(cfg, settings, "--ivr-app", DEMO_APP, prefix=prefix)

    @contextlib.contextmanager
    def run_together(self, *hosts: str) -> Iterator[list[Node]]:
        """run() for each of `hosts` at once (each start waits on its own workers: in parallel they cost the
        slowest, not the sum); all stopped afterwards, also when one of them failed to start."""
        managers = [self.run(h) for h in hosts]
        with contextlib.ExitStack() as stack:
            with ThreadPoolExecutor(len(managers)) as pool:
                futures = [pool.submit(m.__enter__) for m in managers]
            nodes: list[Node] = []
            error: BaseException | None = None
            for manager, future in zip(managers, futures, strict=True):
                try:
                    nodes.append(future.result())
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others are registered
                    error = error or exc
                    continue
                stack.push(manager)
            if error is not None:
                raise error
            yield nodes

    def dests_at(self, front: str) -> list[kamailio.Destination]:
        paths = kamailio.KamailioPaths.for_settings(self.fronts[front][1])
        return asyncio.run(kamailio.destinations_at(f"unix:{paths.ctl_socket}"))

    def dests(self) -> list[kamailio.Destination]:
        return asyncio.run(kamailio.destinations_at(f"unix:{self.ctl.ctl_socket}"))

    def of(self, host: str) -> list[kamailio.Destination]:
        return [d for d in self.dests() if d.uri.startswith(f"sip:{self.topo.address(host)}:")]

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value or time.monotonic() > deadline:
                assert value, f"{what}: not within {timeout_s} s; dispatcher: {self.dests()}"
                return value
            time.sleep(0.3)

    def calls(self, name: str, calls: int, hold_ms: int, rate: float = 20,
              target: str | None = None) -> subprocess.Popen[bytes]:
        """sipp from the caller namespace through the front door (or `target`); its screen in logs/<name>.log,
        its response times in logs/<name>.stat.csv. sipp sends every request to that address, whatever the
        route set says."""
        logs = self.tmp / "logs"
        scenario = caller_scenario(self.tmp, None)
        out = (logs / f"{name}.log").open("wb")
        self.media_base += 4 * calls + 8
        argv = [sipp_binary(), "-sf", str(scenario), "-i", self.topo.address("caller"), "-p", "0",
                "-mp", str(self.media_base), "-m", str(calls), "-l", str(calls), "-r", str(rate),
                "-d", str(hold_ms), "-recv_timeout", "30000", "-nostdin", "-trace_err",
                "-error_file", str(logs / f"{name}.errors.log"), "-trace_stat", "-stf",
                str(logs / f"{name}.stat.csv"), "-fd", "1", f"{target or self.front_settings.sip.bind_address}:{SIP_PORT}"]
        return subprocess.Popen(self.topo.argv("caller", argv), stdout=out, stderr=subprocess.STDOUT, cwd=logs,
                                start_new_session=True)

    def stop_calls(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill a sipp whose calls are no longer needed (the workers end them by media timeout or at stop)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def counts(self, name: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> tuple[int, int]:
        """(successful, failed) once sipp `name` has finished."""
        proc.wait(timeout_s)
        return screen_counts(self.tmp / "logs" / f"{name}.log")


def active(dests: list[kamailio.Destination], count: int = WORKERS) -> bool:
    return len(dests) == count and all(d.flags.startswith("A") for d in dests)


def load(dests: list[kamailio.Destination]) -> int:
    return sum(d.load for d in dests)


def dispatched(front: Node, start: int) -> list[str]:
    """Addresses the front door dispatched new calls to, from its stderr line `start` on."""
    return re.findall(r"event=call_dispatched dst=sip:([\d.]+):", "".join(front.stderr[start:]))
