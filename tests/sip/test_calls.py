"""Real calls into a real worker: the pjsua2 test caller and sipp on 127.0.0.1."""
from __future__ import annotations

import math
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from testkit.rawsip import RawSip, sdp
from tests.sip.harness import Worker, caller, sipp, start_caller

pytestmark = pytest.mark.sip


def _dbfs(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = math.sqrt(float(np.mean(x * x))) if x.size else 0.0
    return 20 * math.log10(rms / 32768) if rms else -100.0


def test_test_caller_hears_greeting_and_digits_round_trip(worker: Worker, tmp_path: Path) -> None:
    mark = worker.probe_mark()
    record = tmp_path / "call.wav"
    results, proc = caller(worker.uri, "--dtmf", "12#", "--say", "hola, quiero información", "--record",
                           str(record), "--wait", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = results
    assert result["status"] == 200
    # The greeting arrived and is not silence.
    assert result["greeting_start"] is not None and result["greeting_start"] < 1.0
    with wave.open(str(record)) as wav:
        assert wav.getframerate() == 8000
        greeting = wav.readframes(8000)                      # the first second
    assert _dbfs(greeting) > -25
    # RFC 4733 digits reached the session (its probe) and came back to the caller (the demo echoes them on '#').
    assert worker.probed("dtmf", mark, "digit") == ["1", "2", "#"]
    assert result["dtmf_received"] == "12#"
    dtmf_turn, speech_turn = result["turns"]
    assert dtmf_turn["reply_start"] is not None              # the per-digit tone
    assert speech_turn["latency_ms"] is not None and speech_turn["latency_ms"] > 0
    m = worker.wait_idle()
    assert m['veratur_calls_total{disposition="bye"}'] >= 1


def test_tcp_transport_call(worker: Worker) -> None:
    results, proc = caller(worker.uri + ";transport=tcp", "--pause", "0.3", "--wait", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results[0]["greeting_start"] is not None
    worker.wait_idle()


def test_sipp_speech_rfc4733_and_sip_info_digits(worker: Worker, media: dict[str, str], tmp_path: Path) -> None:
    offset, mark = worker.log_size(), worker.probe_mark()
    proc = sipp("uac_media", worker.hostport, tmp_path, media, test="media")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    worker.wait_idle()
    log = worker.log_since(offset)
    assert "caller=******4567" in log and "2281234567" not in log      # the log masks the caller number
    assert worker.probed("utterance", mark)                               # PCMU from the SDP port was heard
    assert worker.probed("dtmf", mark, "digit") == ["5", "9", "7"]        # RFC 4733 then SIP INFO
    assert worker.probed("ended", mark, "reason") == ["bye"]


def test_cancel_while_ringing_cleans_up(worker: Worker, tmp_path: Path, serves) -> None:  # type: ignore[no-untyped-def]
    offset = worker.log_size()
    proc = sipp("uac_cancel", worker.hostport, tmp_path, test="cancel")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "reason=cancel" in worker.log_since(offset)
    worker.wait_idle()
    serves()


def test_call_without_rtp_is_hung_up(worker: Worker, tmp_path: Path, serves) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    proc = sipp("uac_no_rtp", worker.hostport, tmp_path, test="no-rtp")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]   # the portal's BYE came
    assert time.monotonic() - started < 12                                    # media timeout is 4 s here
    m = worker.wait_idle()
    assert m['veratur_calls_total{disposition="media_timeout"}'] >= 1
    serves()


def test_refer_transfer_with_case_headers(worker: Worker, media: dict[str, str], tmp_path: Path) -> None:
    mark = worker.probe_mark()
    subs = {"DTMF_PCAP": media["DTMF0_PCAP"], "SIPFRAG": "200 OK", "AFTER_NOTIFY": "@PORTAL_BYE@"}
    proc = sipp("uac_refer", worker.hostport, tmp_path, subs, test="refer")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]    # REFER had X-Veratur-Case
    assert [(r["ok"], r["code"]) for r in worker.probed("transfer", mark)] == [(True, 200)]  # type: ignore[index]
    m = worker.wait_idle()
    assert m['veratur_calls_total{disposition="transferred"}'] >= 1


def test_refer_refused_by_target_keeps_the_call(worker: Worker, media: dict[str, str], tmp_path: Path) -> None:
    mark = worker.probe_mark()
    subs = {"DTMF_PCAP": media["DTMF0_PCAP"], "SIPFRAG": "486 Busy Here", "AFTER_NOTIFY": "@CALLER_BYE@"}
    proc = sipp("uac_refer", worker.hostport, tmp_path, subs, test="refer-486")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]    # our BYE found the call up
    assert [(r["ok"], r["code"]) for r in worker.probed("transfer", mark)] == [(False, 486)]  # type: ignore[index]
    worker.wait_idle()


def test_refer_without_final_notify_times_out(worker: Worker, media: dict[str, str], tmp_path: Path) -> None:
    mark = worker.probe_mark()
    subs = {"DTMF_PCAP": media["DTMF0_PCAP"], "HOLD_MS": "2600"}   # transfer timeout 2 s, media timeout 4 s
    proc = sipp("uac_refer_no_notify", worker.hostport, tmp_path, subs, test="refer-timeout")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]    # the call stayed up for our BYE
    worker.wait_idle()
    assert [(r["ok"], r["code"]) for r in worker.probed("transfer", mark)] == [(False, 408)]  # type: ignore[index]


def test_fifth_concurrent_call_gets_486(worker: Worker, serves) -> None:  # type: ignore[no-untyped-def]
    holders = start_caller(worker.uri, "--calls", "4", "--pause", "6", "--wait", "0")
    try:
        worker.wait_for(lambda m: m["veratur_calls_active"] == 4, timeout_s=20)
        with RawSip("127.0.0.1", worker.port) as s:
            call_id, branch = s.request("INVITE", body=sdp())
            final = s.final()
            assert final is not None and final.code == 486
            s.ack_failure(call_id, branch, final)
        out, err = holders.communicate(timeout=60)
    finally:
        if holders.poll() is None:
            holders.kill()
    assert holders.returncode == 0, err[-3000:]
    assert out.count('"status": 200') == 4
    worker.wait_idle()
    serves()
