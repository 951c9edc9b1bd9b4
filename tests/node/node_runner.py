"""Run a whole node (`veratur up`) as a child process of a test, and place sipp calls through its front door."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from foundation.config import Settings
from tests.node.conftest import HOST, SCENARIOS, free_port_block, start_sipp

BANNER = "is up."


@dataclass
class Node:
    """A running `veratur up` and what it printed."""

    settings: Settings
    proc: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def wait_for(self, pattern: str, timeout_s: float, start: int = 0) -> re.Match[str]:
        """Wait until a line of stdout/stderr (from line index `start` of stderr) matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.stdout + self.stderr[start:]:
                match = regex.search(line)
                if match:
                    return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s; output tail:\n"
                             + self.output()[-4000:])

    def workers(self) -> dict[int, psutil.Process]:
        """The live IVR worker processes by index."""
        found: dict[int, psutil.Process] = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = child.cmdline()
                if "ivr" in cmd and "--index" in cmd:
                    found[int(cmd[cmd.index("--index") + 1])] = child
        return found

    def tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        return []


def _pump(stream, sink: list[str]) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        sink.append(line)


@contextlib.contextmanager
def run_node(config: Path, settings: Settings, *extra: str, ready_timeout_s: float = 240.0) -> Iterator[Node]:
    """`veratur --config CONFIG up EXTRA...`; yields once the banner is printed; stops it (SIGTERM) after.
    Everything the node printed is left in node.log beside the config."""
    argv = [sys.executable, "-m", "veratur.cli", "--config", str(config), "up", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    node = Node(settings, proc)
    threading.Thread(target=_pump, args=(proc.stdout, node.stdout), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, node.stderr), daemon=True).start()
    try:
        node.wait_for(re.escape(BANNER), ready_timeout_s)
        yield node
    finally:
        if proc.poll() is None:
            tree = node.tree()
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                for p in tree:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                proc.wait(10)
        (config.parent / "node.log").write_text(node.output())


def caller_scenario(tmp: Path, pcap: Path | None) -> Path:
    """uac_call.xml, with the caller playing `pcap` (PCMU RTP from its SDP port) after the ACK."""
    text = (SCENARIOS / "uac_call.xml").read_text()
    if pcap is not None:
        text = text.replace("<!--MEDIA-->",
                            f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
    path = tmp / ("uac_media.xml" if pcap else "uac_call.xml")
    path.write_text(text)
    return path


def start_calls(settings: Settings, scenario: Path, logs: Path, name: str, calls: int, hold_ms: int,
                rate: float) -> subprocess.Popen[bytes]:
    """`calls` sipp calls through the node's front door, all up at once, each held `hold_ms`."""
    return start_sipp(["-sf", str(scenario), "-i", HOST, "-p", str(free_port_block(1)),
                       "-mp", str(free_port_block(4 * calls + 4, 40000, 50000)), "-m", str(calls),
                       "-l", str(calls), "-r", str(rate), "-d", str(hold_ms), "-recv_timeout", "20000",
                       "-trace_stat", "-stf", str(logs / f"{name}.stat.csv"), "-fd", "1",
                       "-trace_rtt", "-rtt_freq", "1",
                       f"{HOST}:{settings.sip.port}"], logs, name)


def sipp_counts(logs: Path, name: str) -> tuple[int, int]:
    """(successful, failed) calls from sipp's final screen."""
    text = (logs / f"{name}.log").read_text(errors="replace")
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return (int(ok[-1]) if ok else 0, int(failed[-1]) if failed else 0)
