"""A whole node as a test or bench peer: a settings file on free ports, a real Kamailio started from the
generated config, `veratur up` as a child process, and sipp callers through the node's front door."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from foundation.config import Settings, load_settings
from testkit.ports import HOST, free_port_block
from testkit.sipp import SCENARIOS, screen_counts, start_background
from veratur import kamailio
from veratur.health import sip_options


def write_settings(tmp_path: Path, **sections: dict[str, Any]) -> tuple[Path, Settings]:
    """A config file in tmp_path (data_dir inside it, free ports) with `sections` merged over the test defaults."""
    base = free_port_block(13)
    raw: dict[str, Any] = {
        "node_name": "test-node",
        "data_dir": str(tmp_path / "var"),
        "sip": {"bind_address": HOST, "port": base, "worker_base_port": base + 1, "workers": 2,
                # every test caller is 127.0.0.1 (one "trunk"): its share is the whole rate unless a test says so
                "new_calls_per_second": 50, "new_calls_per_source_per_second": 50,
                "rtp_port_start": free_port_block(200, 30000, 40000),
                "rtp_port_range": 200},
        "web": {"port": base + 9},
        "metrics": {"port": free_port_block(10)},
        "dialogue": {"rasa_url": f"http://{HOST}:{base + 10}", "action_server_port": base + 11,
                     "dense": {"port": base + 12}},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'veratur.db'}"},
        "tts": {"cache_dir": str(tmp_path / "var" / "tts-cache")},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    path = tmp_path / "veratur.yml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path, load_settings(path, environ={})


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 5.0) -> None:
    """SIGTERM the process group a test started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


async def wait_options(port: int, expect: int = 200, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await sip_options(HOST, port, timeout_s=0.5) == expect:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"nothing answered OPTIONS {expect} on {HOST}:{port} within {timeout_s} s")


@dataclass
class RunningKamailio:
    settings: Settings
    paths: kamailio.KamailioPaths
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def rpc(self, *args: str) -> str:
        return await kamailio.kamcmd(self.paths, *args)


@contextlib.asynccontextmanager
async def run_kamailio(settings: Settings, log_dir: Path) -> AsyncIterator[RunningKamailio]:
    """Generate the config, start Kamailio in its own process group, wait until it answers OPTIONS."""
    paths = kamailio.write_config(settings)
    await kamailio.check_config(paths)
    log = log_dir / "kamailio.log"
    with log.open("wb") as out:
        # Popen returns at once (fork+exec); Kamailio runs in the background like the supervisor would run it.
        proc = subprocess.Popen(kamailio.command(paths), stdout=out, stderr=subprocess.STDOUT,  # noqa: ASYNC220
                                start_new_session=True)
    try:
        await wait_options(settings.sip.port)
        yield RunningKamailio(settings, paths, proc, log)
    finally:
        stop_group(proc)


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
def run_node(config: Path, settings: Settings, *extra: str, ready_timeout_s: float = 240.0,
             prefix: tuple[str, ...] = ()) -> Iterator[Node]:
    """`veratur --config CONFIG up EXTRA...`; yields once the banner is printed; stops it (SIGTERM) after.
    Everything the node printed is left in node.log beside the config. `prefix` runs it through another program
    that execs it (e.g. `ip netns exec NS`, testkit.netns)."""
    argv = [*prefix, sys.executable, "-m", "veratur.cli", "--config", str(config), "up", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
    return start_background(["-sf", str(scenario), "-i", HOST, "-p", str(free_port_block(1)),
                       "-mp", str(free_port_block(4 * calls + 4, 40000, 50000)), "-m", str(calls),
                       "-l", str(calls), "-r", str(rate), "-d", str(hold_ms), "-recv_timeout", "20000",
                       "-trace_stat", "-stf", str(logs / f"{name}.stat.csv"), "-fd", "1",
                       "-trace_rtt", "-rtt_freq", "1",
                       f"{HOST}:{settings.sip.port}"], logs, name)


def sipp_counts(logs: Path, name: str) -> tuple[int, int]:
    """(successful, failed) calls from the final screen of the sipp started as `name`."""
    return screen_counts(logs / f"{name}.log")
