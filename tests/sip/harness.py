"""Real peers for the SIP tests. The worker, the test caller and the sipp runner live in testkit (bench/ and
every test area share them); this module keeps the names the SIP tests import."""
from __future__ import annotations

import subprocess
from pathlib import Path

from testkit import sipp as sippkit
from testkit.ports import free_tcp_port, free_udp_port
from testkit.worker import READY_TIMEOUT_S, VERATUR, Worker, caller, parse_metrics, start_caller

__all__ = ["READY_TIMEOUT_S", "SCENARIOS", "VERATUR", "Worker", "caller", "free_tcp_port", "free_udp_port",
           "parse_metrics", "sipp", "start_caller"]

SCENARIOS = Path(__file__).parent / "scenarios"


def sipp(scenario: str, target: str, tmp: Path, subs: dict[str, str] | None = None, transport: str = "u1",
         timeout_s: float = 30, test: str = "sipp") -> subprocess.CompletedProcess[str]:
    """Run one sipp call of `scenarios/<scenario>.xml` (placeholders @NAME@ filled from `subs`)."""
    script = sippkit.render(SCENARIOS / f"{scenario}.xml", tmp, subs, test=test,
                            parts=(sippkit.SCENARIOS, SCENARIOS))
    return sippkit.run_call(script, target, cwd=tmp, transport=transport, timeout_s=timeout_s)
