"""What a worker logs and discloses when an outsider talks to it: no caller number or whole message in the log,
a product-only User-Agent, 503 + Retry-After when full (see also test_lifecycle.py)."""
from __future__ import annotations

import pytest

from ivr.sip.pj_objects import MAX_PJ_LOG_CHARS, summarize_pj_log
from testkit import sipraw
from testkit.rawsip import RawSip, sdp
from tests.sip.harness import Worker

pytestmark = pytest.mark.sip

NUMBER = "2289876543"


def test_pjsip_error_summary_is_bounded_and_masked() -> None:
    packet = ("Error processing packet from 127.0.0.1:5060: Missing required header(s) CSeq [code 171050]:\n"
              f"INVITE sip:{NUMBER}@h SIP/2.0\nP-Asserted-Identity: <sip:{NUMBER}@h>\n" + "x" * 5000)
    line = summarize_pj_log(packet)
    assert NUMBER not in line and "P-Asserted" not in line and len(line) < MAX_PJ_LOG_CHARS + 60
    assert "Missing required header" in line and "lines of the message not logged" in line
    assert NUMBER not in summarize_pj_log(packet, whole=True)          # debug message logging: masked too
    assert summarize_pj_log(f"call from {NUMBER}") == "call from ******6543"


def test_dropped_invite_leaves_no_number_and_no_message_in_the_log(worker: Worker) -> None:
    with RawSip("127.0.0.1", worker.port) as s:
        # No CSeq: pjsip drops it and logs the error with the whole packet appended.
        s.request("INVITE", body=sdp(), omit=("CSeq",),
                  extra=f"P-Asserted-Identity: <sip:{NUMBER}@127.0.0.1>\r\nSubject: {'q' * 3000}\r\n")
        assert s.final(1.0) is None
    worker.wait_idle()
    log = worker.log()
    assert "Error processing" in log or "Missing" in log
    assert NUMBER not in log and "q" * 100 not in log and "P-Asserted-Identity" not in log


def test_user_agent_names_the_product_only(worker: Worker) -> None:
    with RawSip("127.0.0.1", worker.port) as s:
        s.request("OPTIONS")
        final = s.final()
    assert final is not None and final.code == 200
    agent = final.header("Server") or final.header("User-Agent")
    assert agent == "Veratur", final.text


def test_behind_kamailio_a_caller_that_is_not_the_front_door_gets_403(worker: Worker) -> None:
    # The worker runs with use_kamailio (the default) and front_doors [] = its bind address 127.0.0.1; a caller on
    # 127.0.0.3 is inside allowed_peers (127.0.0.0/8) but is not the front door.
    with sipraw.RawSip("127.0.0.3") as raw:
        raw.send(sipraw.invite("127.0.0.1", worker.port, raw.host, raw.port), ("127.0.0.1", worker.port))
        answers = raw.collect(1, 3.0)
    assert answers.codes() == [403], answers.finals
    worker.wait_idle()
