"""Interoperability with what real carriers and PBXs send, straight to a real worker (`veratur ivr --app demo`):
codec offers (PCMA, ptime 30, a telephone-event payload type other than 101, G.722-only or unknown codecs),
RFC 4733 digits of odd shapes, SIP INFO digits, late offer, hold and session refresh, symmetric RTP (NAT), an
SSRC change and reordered or duplicated packets. The caller is `testkit.sipdialog` (plain sockets, its own RTP),
so each case sends exactly what a carrier would; the demo handler's probe says what reached the call."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit import pcaps
from testkit.sipdialog import RtpSocket, RtpStream, SipDialog, sdp_body
from tests.sip.harness import Worker

pytestmark = pytest.mark.sip

PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}
LEAD_IN_S = 1.4            # the demo greeting lasts 1.2 s: an utterance that ends under it is not answered


def speech_pcm() -> bytes:
    """Silence past the greeting, a 0.6 s 'utterance', trailing silence the endpointer waits for."""
    return pcaps.silence_pcm(LEAD_IN_S) + pcaps.tone_pcm(300, 0.6) + pcaps.silence_pcm(0.7)


def wait_probe(worker: Worker, event: str, mark: int, count: int = 1, timeout_s: float = 10.0) -> list[object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = worker.probed(event, mark)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return worker.probed(event, mark)


@contextmanager
def answered(worker: Worker, codecs: dict[int, str] | None = None, *, ptime: int = 20, extra: str = "",
             late_offer: bool = False) -> Iterator[tuple[SipDialog, RtpSocket]]:
    """A call from a fresh dialog and RTP socket, answered and ACKed; hung up (BYE) and checked idle after."""
    rtp = RtpSocket()
    dialog = SipDialog("127.0.0.1", worker.port)
    offer = sdp_body("127.0.0.1", rtp.port, codecs or PCMU_TE, ptime=ptime)
    dialog.answer_sdp = offer
    try:
        dialog.invite("" if late_offer else offer, extra=extra)
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 200, final and final.text
        dialog.ack(offer if late_offer else "")
        assert dialog.remote is not None, final.text
        yield dialog, rtp
        if not any(r.method == "BYE" for r in dialog.requests):
            dialog.request("BYE")
            bye = dialog.wait("BYE")
            assert bye is not None and bye.code == 200, bye and bye.text
    finally:
        if dialog.to_tag and not any(r.method == "BYE" for r in dialog.requests):
            dialog.request("BYE")                   # a failed check must not leave the call holding a slot
            dialog.wait("BYE", 2.0)
        dialog.close()
        rtp.close()
    worker.wait_idle()


def remote_rtp(dialog: SipDialog) -> tuple[str, int]:
    assert dialog.remote is not None
    return dialog.remote.host, dialog.remote.port


# ---- codecs ---------------------------------------------------------------------------------------------------
def test_pcma_offer_is_answered_with_pcma_both_ways(worker: Worker) -> None:
    mark = worker.probe_mark()
    with answered(worker, {8: "PCMA/8000", 101: "telephone-event/8000"}) as (dialog, rtp):
        assert dialog.remote is not None and dialog.remote.payload_types[0] == 8
        rtp.send(RtpStream(pt=8).audio(speech_pcm(), "PCMA"), remote_rtp(dialog))
        assert wait_probe(worker, "utterance", mark), "the A-law utterance was not heard"
        assert set(rtp.payload_types) <= {8, 101} and rtp.payload_types.get(8, 0) > 25, rtp.payload_types


def test_ptime_30_and_telephone_event_96(worker: Worker) -> None:
    mark = worker.probe_mark()
    with answered(worker, {0: "PCMU/8000", 96: "telephone-event/8000"}, ptime=30) as (dialog, rtp):
        assert dialog.remote is not None and dialog.remote.pt_of("telephone-event") == 96, dialog.remote
        stream = RtpStream(pt=0)
        rtp.send(stream.audio(speech_pcm(), ptime_ms=30), remote_rtp(dialog), interval_s=0.03)
        rtp.send(stream.dtmf("4", 96, 120), remote_rtp(dialog))
        assert wait_probe(worker, "utterance", mark), "30 ms packets were not heard"
        assert wait_probe(worker, "dtmf", mark) and worker.probed("dtmf", mark, "digit") == ["4"]


@pytest.mark.parametrize("codecs", [{9: "G722/8000"}, {18: "G729/8000", 3: "GSM/8000"},
                                    {111: "opus/48000/2", 101: "telephone-event/8000"}],
                         ids=["g722-only", "g729-gsm", "opus-only"])
def test_offer_without_a_codec_we_speak_gets_488_with_a_warning(worker: Worker, codecs: dict[int, str]) -> None:
    rtp = RtpSocket()
    with SipDialog("127.0.0.1", worker.port) as dialog:
        dialog.invite(sdp_body("127.0.0.1", rtp.port, codecs))
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 488, final and final.text
        dialog.ack_failure(final)
        # pjsua's own answer (behind Kamailio the front door answers first, with 305: tests/node/test_interop_door.py)
        assert "codec" in (final.header("Warning") or ""), final.text
    rtp.close()
    worker.wait_idle()


# ---- DTMF -----------------------------------------------------------------------------------------------------
def test_rfc4733_odd_durations_and_redundant_end_packets(worker: Worker) -> None:
    mark = worker.probe_mark()
    with answered(worker) as (dialog, rtp):
        stream, dest = RtpStream(pt=0), remote_rtp(dialog)
        silence = pcaps.silence_pcm(0.1)
        packets = stream.audio(silence)
        packets += stream.dtmf("1", 101, 40, end_repeats=1)               # very short, one end packet only
        packets += stream.audio(silence)
        packets += stream.dtmf("1", 101, 60, end_repeats=6)               # the same key again, six end packets
        packets += stream.audio(silence)
        packets += stream.dtmf("2", 101, 2500, step_ms=50)                # held 2.5 s (updates every 50 ms)
        packets += stream.audio(silence)
        long_end = stream.dtmf("3", 101, 200, end_repeats=3)
        packets += long_end[-3:]                                          # only the end packets arrived
        packets += stream.audio(pcaps.silence_pcm(0.3))
        rtp.send(packets, dest)
        assert wait_probe(worker, "dtmf", mark, 4) and worker.probed("dtmf", mark, "digit") == ["1", "1", "2", "3"]


def test_sip_info_dtmf_relay(worker: Worker) -> None:
    # application/dtmf (a bare key) gets pjsua's 500 here; the front door turns it into dtmf-relay
    # (tests/node/test_interop_door.py).
    mark = worker.probe_mark()
    with answered(worker) as (dialog, rtp):
        dest = remote_rtp(dialog)
        keepalive = RtpStream(pt=0)
        rtp.send(keepalive.audio(pcaps.silence_pcm(0.2)), dest)
        for key in "8*":
            dialog.request("INFO", f"Signal={key}\r\nDuration=160\r\n", "application/dtmf-relay")
            info = dialog.wait("INFO")
            assert info is not None and info.code == 200, info and info.text
        rtp.send(keepalive.audio(pcaps.silence_pcm(0.3)), dest)
        assert wait_probe(worker, "dtmf", mark, 2) and worker.probed("dtmf", mark, "digit") == ["8", "*"]


# ---- signalling ---------------------------------------------------------------------------------------------
def test_late_offer_with_the_answer_in_the_ack(worker: Worker) -> None:
    mark = worker.probe_mark()
    with answered(worker, late_offer=True) as (dialog, rtp):
        assert dialog.remote is not None and 0 in dialog.remote.payload_types
        rtp.send(RtpStream(pt=0).audio(speech_pcm()), remote_rtp(dialog))
        assert wait_probe(worker, "utterance", mark), "no audio after a late offer"
        assert rtp.received > 25                                          # and the portal's audio reached us


def test_hold_and_unhold_by_reinvite_keep_the_call(worker: Worker) -> None:
    mark = worker.probe_mark()
    with answered(worker) as (dialog, rtp):
        dest, stream = remote_rtp(dialog), RtpStream(pt=0)
        for version, direction, expect in ((2, "sendonly", "recvonly"), (3, "inactive", "inactive"),
                                           (4, "sendrecv", "sendrecv")):
            body = sdp_body("127.0.0.1", rtp.port, PCMU_TE, direction=direction, version=version)
            dialog.reinvite(body)
            ok = dialog.wait("INVITE")
            assert ok is not None and ok.code == 200, (direction, ok and ok.text, [r.method for r in dialog.requests])
            dialog.ack()
            assert dialog.remote is not None and dialog.remote.direction == expect, ok.text
            if direction == "inactive":
                time.sleep(5)                  # longer than this worker's 4 s media timeout: on hold is not dead
        assert not any(r.method == "BYE" for r in dialog.requests), "the portal hung up a held call"
        # After the unhold the audio flows both ways again (pjsua may have rebuilt the stream in a new slot).
        before = rtp.received
        rtp.send(stream.audio(speech_pcm()) + stream.dtmf("9", 101, 120), dest)
        assert wait_probe(worker, "dtmf", mark) and worker.probed("dtmf", mark, "digit") == ["9"]
        assert wait_probe(worker, "utterance", mark), "no audio reached the call after the unhold"
        assert rtp.received - before > 50, "the portal's audio did not come back after the unhold"


def test_a_call_held_too_long_is_hung_up(tmp_path: Path) -> None:
    held = Worker(tmp_path, env={"VERATUR__SIP__HOLD_TIMEOUT_S": "2"}).start()
    try:
        with answered(held) as (dialog, rtp):
            dialog.reinvite(sdp_body("127.0.0.1", rtp.port, PCMU_TE, direction="inactive", version=2))
            ok = dialog.wait("INVITE")
            assert ok is not None and ok.code == 200, ok and ok.text
            dialog.ack()
            assert dialog.wait_request("BYE", timeout_s=15), "a call held past sip.hold_timeout_s stayed up"
        assert "held too long" in held.log()
    finally:
        assert held.stop() == 0


def test_session_timer_refresh_by_update_and_reinvite(worker: Worker) -> None:
    extra = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n"
    with answered(worker, extra=extra) as (dialog, rtp):
        stream, dest = RtpStream(pt=0), remote_rtp(dialog)
        rtp.send(stream.audio(pcaps.silence_pcm(0.2)), dest)
        dialog.request("UPDATE", extra="Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n")
        update = dialog.wait("UPDATE")
        assert update is not None and update.code == 200, update and update.text
        assert (update.header("Session-Expires") or "").startswith("90"), update.text
        body = sdp_body("127.0.0.1", rtp.port, PCMU_TE, version=2)
        dialog.reinvite(body, extra="Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n")
        again = dialog.wait("INVITE")
        assert again is not None and again.code == 200, again and again.text
        dialog.ack()
        rtp.send(stream.audio(pcaps.silence_pcm(0.2)), dest)


def test_session_expires_below_min_se_gets_422(worker: Worker) -> None:
    rtp = RtpSocket()
    with SipDialog("127.0.0.1", worker.port) as dialog:
        dialog.invite(sdp_body("127.0.0.1", rtp.port, PCMU_TE), extra="Supported: timer\r\nSession-Expires: 30\r\n")
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 422 and final.header("Min-SE"), final and final.text
        dialog.ack_failure(final)
    rtp.close()
    worker.wait_idle()


def test_require_100rel_is_served_or_refused_with_420(worker: Worker) -> None:
    rtp = RtpSocket()
    with SipDialog("127.0.0.1", worker.port) as dialog:
        dialog.invite(sdp_body("127.0.0.1", rtp.port, PCMU_TE), extra="Require: 100rel\r\nSupported: 100rel\r\n")
        final = dialog.wait_invite_final()
        assert final is not None and final.code in (200, 420), final and final.text
        if final.code == 420:
            dialog.ack_failure(final)
            assert "100rel" in (final.header("Unsupported") or ""), final.text
        else:
            dialog.ack()
            dialog.request("BYE")
            assert dialog.wait("BYE") is not None
    rtp.close()
    worker.wait_idle()


def test_cancel_right_after_the_invite(worker: Worker) -> None:
    rtp = RtpSocket()
    with SipDialog("127.0.0.1", worker.port) as dialog:
        dialog.invite(sdp_body("127.0.0.1", rtp.port, PCMU_TE))
        dialog.cancel()                                                   # before any provisional answer
        cancelled = dialog.wait("CANCEL")
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 487, final and final.text
        assert cancelled is not None and cancelled.code in (200, 481)
        dialog.ack_failure(final)
    rtp.close()
    worker.wait_idle()


def test_bye_during_the_greeting(worker: Worker) -> None:
    mark = worker.probe_mark()
    with answered(worker) as (dialog, rtp):
        rtp.send(RtpStream(pt=0).audio(pcaps.silence_pcm(0.2)), remote_rtp(dialog))
        assert rtp.received > 0                       # the greeting is playing
    assert wait_probe(worker, "ended", mark) and worker.probed("ended", mark, "reason") == ["bye"]


# ---- RTP ------------------------------------------------------------------------------------------------------
def test_rtp_from_another_port_than_the_sdp_is_latched(worker: Worker) -> None:
    """Behind a NAT the caller's RTP comes from a port other than its SDP says: the portal hears it and sends
    its own audio back to where it came from (symmetric RTP)."""
    mark = worker.probe_mark()
    with answered(worker) as (dialog, advertised):
        nat = RtpSocket()
        try:
            nat.send(RtpStream(pt=0).audio(speech_pcm()), remote_rtp(dialog))
            assert wait_probe(worker, "utterance", mark), "RTP from the NATed port was not heard"
            before = nat.received
            deadline = time.monotonic() + 3
            while nat.received == before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert nat.received > before, "the portal's RTP did not follow the caller's source port"
        finally:
            nat.close()


def test_ssrc_change_reordered_and_duplicated_packets(worker: Worker) -> None:
    mark = worker.probe_mark()
    with answered(worker) as (dialog, rtp):
        dest = remote_rtp(dialog)
        first = RtpStream(pt=0, ssrc=0x0A0A0A0A)
        packets = first.audio(pcaps.silence_pcm(0.2))
        packets += first.dtmf("5", 101, 120)
        # A new SSRC (a carrier's media server took over) with new sequence numbers and timestamps.
        second = RtpStream(pt=0, ssrc=0x0B0B0B0B, seq=40000, ts=9_000_000)
        speech = second.audio(speech_pcm())
        for i in range(10, len(speech) - 2, 7):                           # swap neighbours, repeat some packets
            speech[i], speech[i + 1] = speech[i + 1], speech[i]
        speech = [p for i, p in enumerate(speech) for _ in range(2 if i % 11 == 0 else 1)]
        digit = second.dtmf("6", 101, 120)
        digit = digit[:1] + digit + digit[-2:]                            # start and end packets duplicated
        rtp.send(packets + speech + digit + second.audio(pcaps.silence_pcm(0.3)), dest)
        assert wait_probe(worker, "dtmf", mark, 2) and worker.probed("dtmf", mark, "digit") == ["5", "6"]
        assert wait_probe(worker, "utterance", mark), "speech after the SSRC change was not heard"
