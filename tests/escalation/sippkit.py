"""sipp peers for the escalation tests: the escalation scenarios run by testkit's one sipp runner as asyncio
subprocesses (the portal lives on the test's event loop). The RFC 4733 key timeline is testkit.pcaps'."""
from __future__ import annotations

from pathlib import Path

from testkit import sipp as sippkit
from testkit.pcaps import dtmf_timeline
from testkit.sipp import SippRun

__all__ = ["SCENARIOS", "SippRun", "dtmf_timeline", "start_sipp"]

SCENARIOS = Path(__file__).parent / "scenarios"


async def start_sipp(scenario: str, tmp: Path, subs: dict[str, str], *, target: str | None = None,
                     port: int | None = None, timeout_s: float = 60.0) -> SippRun:
    """sipp with `scenarios/<scenario>.xml` (@NAME@ from `subs`, @INVITE@ etc. from testkit); UAC when
    `target` is given, else a UAS on `port`."""
    script = sippkit.render(SCENARIOS / f"{scenario}.xml", tmp, subs, test=scenario)
    return await sippkit.start_async(script, cwd=tmp, target=target, port=port, timeout_s=timeout_s)
