"""A node for the suite: `veratur up` in a work directory of its own (config file with free ports, SQLite case
database, Kamailio in front of the workers), and a sipp agent the portal transfers to.

With `rasa_url` the node starts without its own Rasa (--no-dialogue) and its workers use that one (a test
session shares one Rasa + action server); without it the node starts Rasa and the action server itself."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ivr.call.escalation import decode_uui
from testkit.ports import free_port_block

HOST = "127.0.0.1"
BANNER = "is up."
AGENT_SCENARIO = Path(__file__).with_name("agent.xml")


def node_config(work: Path, *, rasa_url: str | None, database_url: str | None, agent_port: int, workers: int = 1,
                asr: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    base = free_port_block(12)
    agent = f"sip:agentes@{HOST}:{agent_port}"
    raw: dict[str, Any] = {
        "node_name": "voice-eval",
        "data_dir": str(work / "var"),
        "sip": {"bind_address": HOST, "port": base, "worker_base_port": base + 1, "workers": workers,
                "new_calls_per_second": 20, "rtp_port_start": free_port_block(100, 30000, 40000),
                "rtp_port_range": 100, "shutdown_grace_s": 5.0},
        "web": {"port": base + 9},
        "metrics": {"port": free_port_block(workers + 2)},
        "dialogue": {"rasa_url": rasa_url or f"http://{HOST}:{base + 10}", "action_server_port": base + 11,
                     "timeout_s": 10.0},
        "database": {"url": database_url or f"sqlite:///{work / 'var' / 'veratur.db'}"},
        "tts": {"cache_dir": str(work / "var" / "tts-cache")},
        "escalation": {"agent_queue_uri": agent, "allowed_targets": [agent], "transfer_timeout_s": 8.0},
        "asr": asr or {},
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / "veratur.yml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path, raw


@dataclass
class Node:
    config: Path
    raw: dict[str, Any]
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"sip:veratur@{HOST}:{self.raw['sip']['port']}"

    @property
    def database_url(self) -> str:
        return str(self.raw["database"]["url"])

    def text(self) -> str:
        return "".join(self.output)

    def wait_for(self, pattern: str, timeout_s: float) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(regex.search(line) for line in list(self.output)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the node never printed {pattern!r} within {timeout_s:g} s; its output ends:\n"
                           + self.text()[-3000:])


def _pump(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


@contextlib.contextmanager
def run_node(work: Path, *, rasa_url: str | None = None, database_url: str | None = None, agent_port: int,
             workers: int = 1, asr: dict[str, Any] | None = None, ready_timeout_s: float = 300.0
             ) -> Iterator[Node]:
    """`veratur up --no-web` (and --no-dialogue with `rasa_url`); yields once the node and its dialogue answer."""
    config, raw = node_config(work, rasa_url=rasa_url, database_url=database_url, agent_port=agent_port,
                              workers=workers, asr=asr)
    argv = [sys.executable, "-m", "veratur.cli", "--config", str(config), "up", "--no-web"]
    if rasa_url:
        argv.append("--no-dialogue")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    node = Node(config, raw, proc)
    threading.Thread(target=_pump, args=(proc.stdout, node.output), daemon=True).start()
    try:
        node.wait_for(re.escape(BANNER), ready_timeout_s)
        if not rasa_url:
            node.wait_for(r"Dialogue: Rasa is ready", ready_timeout_s)
        yield node
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        (work / "node.log").write_text(node.text())


class Agent:
    """sipp answering the transfers on `port`; the INVITEs it got are read back from its message trace."""

    def __init__(self, work: Path, port: int) -> None:
        sipp = shutil.which("sipp")
        if not sipp:
            raise RuntimeError("sipp is not installed (Debian package sip-tester; scripts/setup.sh installs it)")
        self.work, self.port = work, port
        work.mkdir(parents=True, exist_ok=True)
        self.trace = work / "agent-messages.log"
        self.proc = subprocess.Popen(
            [sipp, "-sf", str(AGENT_SCENARIO), "-i", HOST, "-p", str(port), "-mp", str(free_port_block(4)),
             "-nostdin", "-trace_msg", "-message_file", str(self.trace)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, start_new_session=True)

    def invites(self) -> list[dict[str, str]]:
        """Headers (lower-case names) of every INVITE received so far."""
        if not self.trace.exists():
            return []
        text = self.trace.read_text(errors="replace")
        out = []
        for block in re.split(r"\n-{5,}[^\n]*\n", text):
            lines = [ln.strip() for ln in block.strip().splitlines() if ln.strip()]
            start = next((i for i, ln in enumerate(lines) if ln.startswith("INVITE ")), None)
            if start is None:
                continue
            headers: dict[str, str] = {}
            for ln in lines[start + 1:]:
                name, sep, value = ln.partition(":")
                if not sep or " " in name:
                    break
                headers.setdefault(name.strip().lower(), value.strip())
            out.append(headers)
        return out

    def headers_for(self, portal_call_id: str, wait_s: float = 10.0) -> dict[str, str] | None:
        """The INVITE whose User-to-User names the portal's call, waiting up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            for headers in self.invites():
                uui = headers.get("user-to-user", "")
                try:
                    if decode_uui(uui).get("call") == portal_call_id:
                        return headers
                except ValueError:
                    continue
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
