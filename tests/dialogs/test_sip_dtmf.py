"""A real SIP call with keypad input through the real engine (`veratur ivr --app engine`, whose default dialogue
is ivr.dialogue.rasa.RasaDialogueFactory) to the real Rasa + action server: key 3 (trámite status), the folio and
the PIN by RFC 4733 DTMF; the transcript committed by the engine shows Rasa's answers and the case status.
Speech turns need a Spanish Vosk model, which cannot be downloaded here (the tests use the Korean one)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from dialogs.catalog import load_tramites
from tests.sip.harness import Worker, caller
from veratur.rasa_server import RasaStack

pytestmark = [pytest.mark.sip, pytest.mark.rasa, pytest.mark.slow]


def test_status_by_keypad_over_a_real_call(tmp_path: Path, rasa_stack: RasaStack, cases_db: str,
                                           case_service: CaseService) -> None:
    opened = case_service.open_case("licencia-renovacion", "web",
                                    citizen=CitizenInfo("Marta Llamada", curp="LAMM700707MVZLRR03"))
    folio, pin = opened.case.folio, opened.pin
    worker = Worker(tmp_path, app="engine", env={
        "VERATUR__ASR__MODEL": "ko-test", "VERATUR__DIALOGUE__RASA_URL": rasa_stack.url,
        "VERATUR__DIALOGUE__TIMEOUT_S": "10", "VERATUR__DATABASE__URL": cases_db}).start()
    try:
        results, proc = caller(worker.uri, "--dtmf", "3", "--dtmf", f"{folio}#", "--dtmf", f"{pin}#",
                               "--wait", "4", "--reply-timeout", "20", timeout_s=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        [result] = results
        assert all(turn["reply_start"] is not None for turn in result["turns"]), result["turns"]
        log = worker.log()
        call_id = re.search(r"caller turn .*?call_id=(\S+)", log)
        assert call_id, log[-3000:]
        assert "fallback" not in log.lower()
    finally:
        worker.stop()
    turns = case_service.transcript(call_id.group(1))
    portal = [t.text for t in turns if t.speaker == "portal"]
    keyed = [(t.text, t.intent) for t in turns if t.speaker == "caller"]
    assert "Bienvenido a Veratur" in portal[0]                        # Rasa's greeting, not the menu's
    assert keyed[0][1] == "dtmf" and all(intent == "dtmf" for _, intent in keyed)
    assert any("número de folio" in text for text in portal)
    assert any("NIP" in text for text in portal)
    # the case found is confirmed by its trámite (the folio was just keyed: it is not read back, the reply stays short)
    renewal = load_tramites().get("licencia-renovacion")
    assert renewal is not None
    assert any("Estado:" in text and renewal.spoken_name in text for text in portal), portal
