"""Retention: call details and transcripts past their age are purged, calls of open cases, calls still going and
calls with an open escalation are kept, and the dashboard's figures for the purged period survive (SQLite and
PostgreSQL). The timeline is in 2018-2019, older than every other test's calls, so the shared database's other
rows are never past the cutoffs."""
from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from case_bridge.retention import purge
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import ConfigError, load_settings
from foundation.paths import REPO_ROOT
from testkit.db import migrated_sqlite

NOW = datetime(2019, 6, 1, 12, 0, tzinfo=UTC)


def _call(svc: CaseService, tag: str, days_ago: int, *, close: bool = True) -> str:
    cid = f"{tag}-{uuid.uuid4().hex[:8]}@retention.test"
    t0 = NOW - timedelta(days=days_ago)
    svc.link_call(cid, "2285550101", node="ret", started_at=t0, answered_at=t0)
    svc.add_turn(cid, "caller", "quiero mi acta", "tramite_info", 0.9, at=t0, idempotency_key=f"{cid}#1")
    svc.record_call_stats(cid, {"tallies": [["intent", "tramite_info", 1]]})
    if close:
        svc.close_call(cid, "completed", ended_at=t0 + timedelta(minutes=2))
    return cid


def _case_for(svc: CaseService, cid: str, status: str) -> None:
    opened = svc.open_case("acta_nacimiento", "phone", call_id=cid, idempotency_key=f"ret:{cid}",
                           citizen=CitizenInfo("Luis Mora", phone="2285550101"))
    if status != "open":
        svc.update_status(opened.case.folio, status, "fin", channel="office")


def test_purge_keeps_open_cases_and_the_dashboard(svc: CaseService) -> None:
    old, old_open_case, old_done_case = (_call(svc, t, 400) for t in ("old", "open-case", "done-case"))
    _case_for(svc, old_open_case, "open")
    _case_for(svc, old_done_case, "closed")
    escalated = _call(svc, "escalated", 400)
    svc.escalate(escalated, reason="caller_request")
    still_up = _call(svc, "up", 400, close=False)
    middle, recent = _call(svc, "middle", 100), _call(svc, "recent", 10)
    period = (NOW - timedelta(days=401), NOW - timedelta(days=399))
    before = svc.dashboard(*period)
    assert before.dispositions["completed"] == 4

    result = purge(svc.uow, now=NOW, call_records_days=365, transcripts_days=90, batch=2)   # batches of 2
    assert result.calls == 2 and result.turns == 3          # old + done-case (their turns), middle's turn

    assert svc.get_call(old) is None and svc.get_call(old_done_case) is None
    for kept in (old_open_case, escalated, still_up, middle, recent):
        assert svc.get_call(kept) is not None
    assert svc.transcript(middle) == [] and len(svc.transcript(recent)) == 1
    assert len(svc.transcript(old_open_case)) == 1           # an open case keeps its whole call
    after = svc.dashboard(*period)                           # the rollup is not purged
    assert (after.dispositions, after.top_intents) == (before.dispositions, before.top_intents)
    again = purge(svc.uow, now=NOW, call_records_days=365, transcripts_days=90)
    assert (again.calls, again.turns) == (0, 0)


def test_retention_config_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("retention:\n  call_records_days: 30\n  transcripts_days: 60\n")
    with pytest.raises(ConfigError, match="transcripts_days"):
        load_settings(bad)
    bad.write_text("retention:\n  call_records_days: 0\n")
    with pytest.raises(ConfigError, match="call_records_days"):
        load_settings(bad)


def test_db_purge_command(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "purge.db")
    svc = CaseService.from_url(url)
    try:
        gone = _call(svc, "cli", 0)                           # 2019: past any retention today
    finally:
        svc.close()
    env = {"VERATUR__DATABASE__URL": url, "VERATUR__RETENTION__CALL_RECORDS_DAYS": "30",
           "VERATUR__RETENTION__TRANSCRIPTS_DAYS": "7", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "veratur.cli", "db", "purge"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "purged 1 calls older than 30 days and 1 transcript turns" in done.stdout
    svc = CaseService.from_url(url)
    try:
        assert svc.get_call(gone) is None
    finally:
        svc.close()
