"""One sipp runner for every SIP test and bench: scenario files with @NAME@ placeholders filled in, one command
line, three ways to run it (to the end, as an asyncio subprocess beside a portal living on the same loop, or in
the background as a load generator in its own process group).

Shared scenario pieces (`*.part`: @INVITE@, @PORTAL_BYE@, @CALLER_BYE@) are read from `testkit/scenarios/`."""
from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testkit.ports import HOST, free_udp_port

SCENARIOS = Path(__file__).parent / "scenarios"
"""Scenarios used by several areas (and bench/): the node caller, the 503 check, the stand-in worker, parts."""


class SippMissing(RuntimeError):
    pass


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if not found:
        raise SippMissing("sipp is not installed: the Debian package sip-tester is required "
                          "(scripts/setup.sh installs it)")
    return found


def render(scenario: Path, out_dir: Path, subs: dict[str, str] | None = None, *, test: str | None = None,
           parts: tuple[Path, ...] = (SCENARIOS,)) -> Path:
    """`scenario` with @NAME@ filled from `subs`, the shared parts (@INVITE@ ...) and @TEST@ = `test`, written
    to a fresh file in `out_dir` (several runs of one scenario in one directory never collide)."""
    text = scenario.read_text()
    for key, value in (subs or {}).items():
        text = text.replace(f"@{key}@", value)
    for folder in parts:
        for part in folder.glob("*.part"):
            text = text.replace(f"@{part.stem.upper()}@", part.read_text())
    text = text.replace("@TEST@", test or scenario.stem)
    path = out_dir / f"{scenario.stem}-{time.monotonic_ns()}.xml"
    path.write_text(text)
    return path


def one_call_args(script: Path, *, target: str | None, port: int, transport: str = "u1", timeout_s: float = 30,
                  log_file: Path | None = None) -> list[str]:
    """One sipp call of `script`: a UAC towards `target`, or a UAS on `port` when `target` is None."""
    errors = script.with_suffix(".errors.log")
    args = [sipp_binary(), *([target] if target else []), "-sf", str(script), "-m", "1", "-i", HOST,
            "-mi", HOST, "-p", str(port), "-t", transport, "-timeout", f"{int(timeout_s)}s", "-timeout_error",
            "-trace_err", "-error_file", str(errors)]
    if log_file is not None:
        args += ["-trace_logs", "-log_file", str(log_file)]
    return [*args, "-nostdin"]


def run_call(script: Path, target: str, *, cwd: Path, transport: str = "u1", timeout_s: float = 30
             ) -> subprocess.CompletedProcess[str]:
    """Run one call to the end; sipp's error file is appended to stderr when it failed."""
    cmd = one_call_args(script, target=target, port=free_udp_port(), transport=transport, timeout_s=timeout_s)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 15, cwd=cwd)
    errors = script.with_suffix(".errors.log")
    if proc.returncode != 0 and errors.exists():
        proc.stderr += "\n" + errors.read_text(errors="replace")
    return proc


@dataclass
class SippRun:
    """A sipp started with `start_async`: await `wait()`; `logged_value` reads a <log> line it wrote."""

    proc: asyncio.subprocess.Process
    log_path: Path
    errors: Path
    port: int
    name: str

    async def wait(self, timeout_s: float = 60.0) -> tuple[int, str]:
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            out, err = await self.proc.communicate()
        text = out.decode(errors="replace")[-3000:] + err.decode(errors="replace")[-3000:]
        if self.errors.exists():
            text += "\n" + self.errors.read_text(errors="replace")[-4000:]
        return int(self.proc.returncode or 0), text

    def logged(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logged_value(self, name: str) -> str | None:
        m = re.search(rf"{name}=(\S+)", self.logged())
        return m.group(1) if m else None

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def start_async(script: Path, *, cwd: Path, target: str | None = None, port: int | None = None,
                      timeout_s: float = 60.0) -> SippRun:
    """One call as an asyncio subprocess (the test's event loop keeps serving an in-process portal)."""
    port = port or free_udp_port()
    log_path = script.with_suffix(".log")
    cmd = one_call_args(script, target=target, port=port, timeout_s=timeout_s, log_file=log_path)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=cwd)
    return SippRun(proc, log_path, script.with_suffix(".errors.log"), port, script.stem.rsplit("-", 1)[0])


def start_background(args: list[str], log_dir: Path, name: str) -> subprocess.Popen[bytes]:
    """sipp with free-form `args` in the background (its own process group); its screen output goes to
    <log_dir>/<name>.log, errors to <log_dir>/<name>.errors.log."""
    out = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen([sipp_binary(), *args, "-nostdin", "-trace_err", "-error_file",
                             str(log_dir / f"{name}.errors.log")],
                            stdout=out, stderr=subprocess.STDOUT, cwd=log_dir, start_new_session=True)


def screen_counts(log: Path) -> tuple[int, int]:
    """(successful, failed) calls from sipp's final screen in `log`."""
    text = log.read_text(errors="replace")
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return (int(ok[-1]) if ok else 0, int(failed[-1]) if failed else 0)
