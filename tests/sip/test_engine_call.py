"""The SIP edge with the real engine behind it (`veratur ivr --app engine`: Vosk with the Korean test model
from PyPI, espeak-ng prompts, the menu dialogue): a real call hears the greeting, keys a digit, gets a reply."""
from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import pytest

from case_bridge.service import CaseService
from testkit.db import migrated_sqlite
from tests.sip.harness import Worker, caller

pytestmark = [pytest.mark.sip, pytest.mark.slow]


def test_engine_answers_a_real_call(tmp_path: Path) -> None:
    db_url = migrated_sqlite(tmp_path / "cases.db")     # the worker's case recorder writes here, not into var/
    worker = Worker(tmp_path, env={"VERATUR__ASR__MODEL": "ko-test", "VERATUR__DATABASE__URL": db_url},
                    app="engine").start()
    try:
        record = tmp_path / "engine.wav"
        results, proc = caller(worker.uri, "--dtmf", "1", "--wait", "0", "--reply-timeout", "8",
                               "--record", str(record), timeout_s=150)
        assert proc.returncode == 0, proc.stderr[-3000:]
        [result] = results
        assert result["greeting_start"] is not None and result["greeting_start"] < 2.0
        with wave.open(str(record)) as wav:
            greeting = np.frombuffer(wav.readframes(8000 * 3), dtype="<i2").astype(np.float64)
        assert 20 * math.log10(math.sqrt(float(np.mean(greeting ** 2))) / 32768) > -35     # spoken, not silence
        [turn] = result["turns"]
        assert turn["reply_start"] is not None                   # the session answered the digit
        m = worker.wait_idle(15)
        assert m["veratur_turn_latency_seconds_count"] >= 1
        # RFC 4733 reached the session as a caller turn: the call's transcript in the case bridge holds it.
        cases = CaseService.from_url(db_url)
        try:
            said = [(turn.speaker, turn.text) for turn in cases.transcript(str(result["call_id"]))]
        finally:
            cases.close()
        assert ("caller", "[DTMF 1]") in said, said
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
