"""Harness for node-level tests: free ports, a settings file per test, a real Kamailio, sipp peers."""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from foundation.config import Settings, load_settings
from veratur import kamailio
from veratur.health import sip_options

SCENARIOS = Path(__file__).parent / "scenarios"
HOST = "127.0.0.1"


def _port_free(port: int) -> bool:
    """True when both UDP and TCP can bind `port` on loopback right now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


def free_port_block(count: int, low: int = 21000, high: int = 59000) -> int:
    """The first port of `count` consecutive ports free on UDP and TCP (other tests run at the same time)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(500):
        base = rng.randrange(low, high - count)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


def write_settings(tmp_path: Path, **sections: dict[str, Any]) -> tuple[Path, Settings]:
    """A config file in tmp_path (data_dir inside it, free ports) with `sections` merged over the test defaults."""
    base = free_port_block(12)
    raw: dict[str, Any] = {
        "node_name": "test-node",
        "data_dir": str(tmp_path / "var"),
        "sip": {"bind_address": HOST, "port": base, "worker_base_port": base + 1, "workers": 2,
                "new_calls_per_second": 50, "rtp_port_start": free_port_block(200, 30000, 40000),
                "rtp_port_range": 200},
        "web": {"port": base + 9},
        "metrics": {"port": free_port_block(10)},
        "dialogue": {"rasa_url": f"http://{HOST}:{base + 10}", "action_server_port": base + 11},
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


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if not found:
        pytest.fail("sipp is not installed: the Debian package sip-tester is required (scripts/setup.sh installs it)")
    return found


def start_sipp(args: list[str], log_dir: Path, name: str) -> subprocess.Popen[bytes]:
    """Start sipp in the background (its own process group); its screen output goes to <log_dir>/<name>.log."""
    out = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen([sipp_binary(), *args, "-nostdin", "-trace_err", "-error_file",
                             str(log_dir / f"{name}.errors.log")],
                            stdout=out, stderr=subprocess.STDOUT, cwd=log_dir, start_new_session=True)


def uas_args(port: int, media_port: int) -> list[str]:
    """sipp as a stand-in worker: answers OPTIONS and INVITEs on `port`."""
    return ["-sf", str(SCENARIOS / "uas_answer.xml"), "-i", HOST, "-p", str(port), "-mp", str(media_port)]


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs"
    path.mkdir()
    yield path
