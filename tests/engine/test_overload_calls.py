"""An overloaded recognizer with real calls: `veratur ivr --app engine` decoding Whisper base in ONE pool thread with
the encoder's full 30-second window (every decode costs seconds of a core), four pjsua2 callers (`veratur call
--calls 4`) speaking at the same moment. Their finals queue behind each other; every turn still gets a reply: the
hold phrase, the answer, or the keypad question (then the keyed answer's reply)."""
from __future__ import annotations

from pathlib import Path

import pytest

from testkit.db import migrated_sqlite
from testkit.ports import free_tcp_port
from testkit.worker import Worker, caller
from voice_models import ModelError
from voice_models.whisper import locate_whisper


def _whisper_missing() -> str | None:
    try:
        locate_whisper()
    except ModelError as exc:
        return f"Whisper base not placed ({exc}): run `veratur models fetch --model whisper-base`"
    return None


pytestmark = [pytest.mark.sip, pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(_whisper_missing() is not None, reason=_whisper_missing() or "")]


def test_four_callers_on_one_overloaded_decoder_all_get_a_reply(tmp_path: Path) -> None:
    db_url = migrated_sqlite(tmp_path / "cases.db")
    worker = Worker(tmp_path, env={
        "VERATUR__ASR__ENGINE": "whisper",
        "VERATUR__ASR__MAX_PARALLEL_DECODERS": "1",
        "VERATUR__ASR__WHISPER__WINDOW": "full",           # 30 s of encoder per decode: the pool falls behind
        "VERATUR__ASR__MAX_WAIT_MS": "800",
        "VERATUR__ASR__MAX_WAIT_KEYPAD_MS": "3000",
        # no dialogue server there: the YAML menu answers (what is said is not the point, that it is answered)
        "VERATUR__DIALOGUE__RASA_URL": f"http://127.0.0.1:{free_tcp_port()}",
        "VERATUR__DATABASE__URL": db_url,
    }, app="engine").start()
    try:
        results, proc = caller(worker.uri, "--calls", "4", "--say", "quiero información sobre el registro civil",
                               "--dtmf", "1", "--wait", "0", "--reply-timeout", "10", timeout_s=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(results) == 4 and all(r["status"] == 200 for r in results), results
        turns = [t for r in results for t in r["turns"]]             # type: ignore[union-attr]
        assert len(turns) == 8
        silent = [t for t in turns if t["latency_ms"] is None]
        assert silent == [], silent                                   # every turn was answered within 10 s
        m = worker.wait_idle(30)
        holds, dropped = m["veratur_asr_hold_total"], m["veratur_asr_final_dropped_total"]
        # the recognizer was overloaded: finals came late (hold) or too late (decode dropped, keys asked)
        assert holds + dropped >= 2, (holds, dropped)
        log = worker.log()
        assert "final late: hold phrase" in log or "final too late: keypad asked" in log
        # speech turns answered within the hold bound plus the endpoint and the phrase's start, never ~10 s
        speech_ms = sorted(t["latency_ms"] for t in turns if t["kind"] == "say")  # type: ignore[type-var]
        print(f"speech reply latencies: {speech_ms} ms; holds {holds:.0f}, dropped {dropped:.0f}")
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
