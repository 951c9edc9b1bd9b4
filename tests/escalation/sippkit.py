"""sipp peers for the escalation tests, run without blocking the event loop the portal lives on, and RFC 4733
pcaps with keys at chosen times (one RTP stream: sequence numbers keep rising across pcaps)."""
from __future__ import annotations

import asyncio
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from testkit import pcaps
from tests.sip.harness import free_udp_port

SCENARIOS = Path(__file__).parent / "scenarios"
SIP_PARTS = Path(__file__).parent.parent / "sip" / "scenarios"


def dtmf_timeline(path: Path, keys: list[tuple[float, str]], *, first_seq: int = 1, first_ts: int = 160,
                  event_ms: int = 160, gap_ms: int = 240) -> tuple[Path, int, int]:
    """A pcap with `digits` starting at `t` seconds each; returns (path, next seq, next timestamp)."""
    packets: list[tuple[float, bytes]] = []
    seq = first_seq
    last_t = 0.0
    for start, digits in keys:
        t = start
        for digit in digits:
            ts = first_ts + int(t * 8000)
            steps = event_ms // 20
            for k in range(1, steps + 1):
                end = k == steps
                payload = struct.pack("!BBH", pcaps.DTMF_EVENTS[digit], (0x80 if end else 0) | 10,
                                      k * pcaps.SAMPLES_PER_PACKET)
                for _ in range(3 if end else 1):
                    packets.append((t + (k - 1) * pcaps.PACKET_S, pcaps._rtp(pcaps.TELEPHONE_EVENT_PT, seq, ts,
                                                                               payload, k == 1)))
                    seq += 1
            t += (event_ms + gap_ms) / 1000
            last_t = t
    pcaps._write(path, packets)
    return path, seq + 10, first_ts + int((last_t + 1) * 8000)


@dataclass
class SippRun:
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


async def start_sipp(scenario: str, tmp: Path, subs: dict[str, str], *, target: str | None = None,
                     port: int | None = None, timeout_s: float = 60.0) -> SippRun:
    """sipp with `scenarios/<scenario>.xml` (@NAME@ from `subs`, @INVITE@ etc. from tests/sip); UAC when
    `target` is given, else a UAS on `port`."""
    text = (SCENARIOS / f"{scenario}.xml").read_text()
    for key, value in subs.items():
        text = text.replace(f"@{key}@", value)
    for part in SIP_PARTS.glob("*.part"):
        text = text.replace(f"@{part.stem.upper()}@", part.read_text())
    text = text.replace("@TEST@", scenario)
    stamp = time.monotonic_ns()
    path = tmp / f"{scenario}-{stamp}.xml"
    path.write_text(text)
    errors = tmp / f"{scenario}-{stamp}.errors.log"
    log_path = tmp / f"{scenario}-{stamp}.log"
    port = port or free_udp_port()
    cmd = ["sipp", *([target] if target else []), "-sf", str(path), "-m", "1", "-i", "127.0.0.1",
           "-mi", "127.0.0.1", "-p", str(port), "-t", "u1", "-timeout", f"{int(timeout_s)}s", "-timeout_error",
           "-trace_err", "-error_file", str(errors), "-trace_logs", "-log_file", str(log_path), "-nostdin"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=tmp)
    return SippRun(proc, log_path, errors, port, scenario)
