"""A real IVR worker (`veratur ivr`) as a test peer: started on a free port, its log in a file, its Prometheus
/metrics polled for the conditions a test waits on (never a fixed sleep); and the pjsua2 test caller
(`veratur call --json`), whose JSON lines say what the caller heard and saw."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from foundation.paths import REPO_ROOT
from testkit.demo_handler import DEMO_APP, PROBE_FILE
from testkit.ports import free_tcp_port

VERATUR = REPO_ROOT / ".venv" / "bin" / "veratur"
READY_TIMEOUT_S = 30


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels kept verbatim)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


class Worker:
    """`veratur ivr --app demo` on a free port, its log in a file, its /metrics scraped over HTTP."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None, app: str = DEMO_APP) -> None:
        self.tmp = tmp
        self.log_path = tmp / "worker.log"
        self.metrics_port = free_tcp_port()
        self.env = {**os.environ, "VERATUR__DATA_DIR": str(tmp), "VERATUR__SIP__MEDIA_TIMEOUT_S": "4",
                    "VERATUR__SIP__ANSWER_DELAY_MS": "300", "VERATUR__SIP__SHUTDOWN_GRACE_S": "2",
                    "VERATUR__ESCALATION__TRANSFER_TIMEOUT_S": "2",
                    **(env or {})}
        self.app = app
        self.proc: subprocess.Popen[str] | None = None
        self.uri = ""
        self.port = 0

    def start(self) -> Worker:
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(VERATUR), "ivr", "--port", "0", "--metrics-port", str(self.metrics_port), "--app", self.app],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=self.env, cwd=REPO_ROOT)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker exited before ready:\n{self.log()}")
            m = re.search(r"sip=(sip:\S+)", line)
            if "veratur ivr ready" in line and m:
                self.uri = m.group(1)
                self.port = int(self.uri.rsplit(":", 1)[1])
                self.wait_metrics()
                return self
        raise RuntimeError(f"worker not ready in {READY_TIMEOUT_S}s:\n{self.log()}")

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        return self.log()[offset:]

    def probe(self, since: int = 0) -> list[dict[str, object]]:
        """What reached the demo handler (testkit.demo_handler's probe file), from record index `since`:
        dicts with call_id, event (dtmf, utterance, transfer, ended) and its fields."""
        path = self.tmp / PROBE_FILE
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines[since:] if line.strip()]

    def probe_mark(self) -> int:
        """The index the next probe record will have (pass it to `probe(since=...)`)."""
        return len(self.probe())

    def probed(self, event: str, since: int = 0, field: str | None = None) -> list[object]:
        """The probe records of `event` since `since` (or just their `field`)."""
        found = [r for r in self.probe(since) if r["event"] == event]
        return [r.get(field) for r in found] if field else list(found)

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return parse_metrics(resp.read().decode())
        except (OSError, http.client.HTTPException) as exc:
            state = "running" if self.proc and self.proc.poll() is None else f"exited {self.proc and self.proc.returncode}"
            raise AssertionError(f"/metrics failed ({exc!r}); worker {state}; log tail:\n{self.log()[-3000:]}") from exc

    def wait_metrics(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.metrics()
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def wait_for(self, predicate: object, timeout_s: float = 10.0) -> dict[str, float]:
        """Poll /metrics until `predicate(metrics)` holds; return the metrics (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            m = self.metrics()
            if predicate(m):  # type: ignore[operator]
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"worker state never matched: { {k: v for k, v in m.items() if 'sip' in k or 'calls' in k} }")
            time.sleep(0.1)

    def wait_idle(self, timeout_s: float = 10.0) -> dict[str, float]:
        """No calls, no legs, no session running, no media port attached; in the conference bridge only the null
        sound device and our pooled (idle, reusable) ports: nothing leaked."""
        return self.wait_for(lambda m: m["veratur_sip_calls"] == 0 and m["veratur_sip_legs"] == 0
                             and m["veratur_sip_ports_in_use"] == 0
                             and m["veratur_sip_media_ports"] == 1 + m["veratur_sip_ports_pooled"]
                             and m["veratur_sip_ports_pooled"] <= 4 and m["veratur_calls_active"] == 0, timeout_s)

    def stop(self, sig: int | None = signal.SIGTERM, timeout_s: float = 20) -> int:
        """Send `sig` (None: it was sent already) and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            if sig is not None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        return int(self.proc.returncode)


def caller(uri: str, *args: str, timeout_s: float = 90, env: dict[str, str] | None = None
           ) -> tuple[list[dict[str, object]], subprocess.CompletedProcess[str]]:
    """Run `veratur call URI ... --json`; the parsed results and the process."""
    proc = subprocess.run([str(VERATUR), "call", uri, "--json", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, **(env or {})}, cwd=REPO_ROOT)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return results, proc


def start_caller(uri: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(VERATUR), "call", uri, "--json", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
