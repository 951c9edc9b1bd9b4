"""Bad input at the SIP door: each gets the correct answer (or is dropped, when no answer can be addressed),
and the worker goes on serving a normal call."""
from __future__ import annotations

import socket

import pytest

from testkit.rawsip import RawSip, sdp
from tests.sip.harness import Worker

pytestmark = pytest.mark.sip


def test_unknown_codec_only_gets_488(worker: Worker, serves) -> None:  # type: ignore[no-untyped-def]
    with RawSip("127.0.0.1", worker.port) as s:
        call_id, branch = s.request("INVITE", body=sdp(codecs={18: "G729/8000", 9: "G722/8000"}))
        final = s.final()
        assert final is not None and final.code == 488
        s.ack_failure(call_id, branch, final)
    worker.wait_idle()
    serves()


def test_bye_for_unknown_call_gets_481(worker: Worker, serves) -> None:  # type: ignore[no-untyped-def]
    with RawSip("127.0.0.1", worker.port) as s:
        s.request("BYE", cseq=2, to_tag="no-such-dialog")
        final = s.final()
        assert final is not None and final.code == 481
    serves()


def test_malformed_sdp_gets_400(worker: Worker, serves) -> None:  # type: ignore[no-untyped-def]
    with RawSip("127.0.0.1", worker.port) as s:
        call_id, branch = s.request("INVITE", body="v=0\r\nthis is not sdp\r\nm=audio x\r\n")
        final = s.final()
        assert final is not None and final.code == 400
        s.ack_failure(call_id, branch, final)
    worker.wait_idle()
    serves()


def test_unusable_media_address_gets_488(worker: Worker, serves) -> None:  # type: ignore[no-untyped-def]
    with RawSip("127.0.0.1", worker.port) as s:
        call_id, branch = s.request("INVITE", body=sdp().replace("IN IP4 127.0.0.1\r\nt=", "IN IP4 999.1.1.1\r\nt="))
        final = s.final()
        assert final is not None and final.code == 488
        s.ack_failure(call_id, branch, final)
    worker.wait_idle()
    serves()


def test_body_that_is_not_sdp_gets_415(worker: Worker, serves) -> None:  # type: ignore[no-untyped-def]
    with RawSip("127.0.0.1", worker.port) as s:
        call_id, branch = s.request("INVITE", body="hola", content_type="text/plain")
        final = s.final()
        assert final is not None and final.code == 415
        s.ack_failure(call_id, branch, final)
    worker.wait_idle()
    serves()


@pytest.mark.parametrize("omit", ["Call-ID", "From", "CSeq"])
def test_invite_missing_a_mandatory_header_is_dropped(worker: Worker, omit: str) -> None:
    # pjsip cannot build a response to a request without these (RFC 3261 8.1.1): it drops it silently.
    with RawSip("127.0.0.1", worker.port) as s:
        s.request("INVITE", body=sdp(), omit=(omit,))
        assert s.responses(1.0) == []
    assert worker.metrics()["veratur_sip_calls"] == 0


def test_garbage_on_udp_and_tcp(worker: Worker, serves) -> None:  # type: ignore[no-untyped-def]
    with RawSip("127.0.0.1", worker.port) as s:
        for junk in (b"\x00\xff" * 300, b"SIP/2.0\r\n\r\n", b"INVITE\r\n\r\n", b"OPTIONS sip:x SIP/9.9\r\n\r\n",
                     b"INVITE sip:veratur@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n"):
            s.send_raw(junk)
        assert [r for r in s.responses(1.0, until_final=False) if r.code < 400] == []
    with socket.create_connection(("127.0.0.1", worker.port), timeout=2) as tcp:
        tcp.sendall(b"\xde\xad\xbe\xef" * 1000 + b"\r\n\r\nINVITE sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\nabc")
    serves()


def test_options_probe_is_answered(worker: Worker) -> None:
    with RawSip("127.0.0.1", worker.port) as s:
        s.request("OPTIONS")
        final = s.final()
        assert final is not None and final.code == 200
