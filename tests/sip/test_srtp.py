"""SRTP with SDES keys (RFC 4568), `sip.srtp` (issue 16), with real peers: real `veratur ivr --app demo` workers
configured optional or mandatory (and the module's default worker, off), the pjsua2 test caller (`veratur call
--srtp mandatory`), a raw SIP caller (`testkit.sipdialog`) that does SRTP itself (`testkit.srtp`: it decrypts
what the worker sends with the key of the worker's answer and encrypts what it sends with the key it offered),
and a real Kamailio front door that applies `sip.srtp_secure_signaling` (SDES keys only over TLS).

The workers here take SRTP straight over UDP (srtp_secure_signaling 0: there is no TLS hop to a bare worker);
the front-door test at the end is the secure setting."""
from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

from foundation.config import ConfigError, SipConfig
from ivr.sip.edge import EdgeConfig, SipEdge
from testkit import pcaps, srtp
from testkit.node import run_kamailio, write_settings
from testkit.ports import HOST, free_port_block
from testkit.sipdialog import RtpSocket, RtpStream, SipDialog, sdp_body
from tests.node.test_kamailio_tls import TlsSip, needs_tls_module
from tests.sip.harness import Worker, caller

pytestmark = pytest.mark.sip

PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}
PCMU_SILENCE = (0xFF, 0x7F)             # μ-law codes of zero
SDES_OVER_UDP = {"VERATUR__SIP__SRTP_SECURE_SIGNALING": "0"}


def _worker(tmp: Path, mode: str) -> Iterator[Worker]:
    w = Worker(tmp, env={"VERATUR__SIP__SRTP": mode, **SDES_OVER_UDP}).start()
    yield w
    code = w.stop()
    log = w.log()
    assert code == 0, f"worker exit code {code}\n{log[-3000:]}"
    for bad in ("Traceback", "Assertion", "Segmentation", "Aborted"):
        assert bad not in log, f"{bad} in the worker log:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def mandatory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from _worker(tmp_path_factory.mktemp("srtp-mandatory"), "mandatory")


@pytest.fixture(scope="module")
def optional(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    yield from _worker(tmp_path_factory.mktemp("srtp-optional"), "optional")


def srtp_offer(host: str, port: int, inline: str, profile: str = "RTP/SAVP") -> str:
    body = sdp_body(host, port, PCMU_TE).replace(" RTP/AVP ", f" {profile} ")
    return body + srtp.crypto_attribute(inline) + "\r\n"


# ---- the pjsua2 caller ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["mandatory", "optional"])
def test_an_srtp_caller_is_answered_with_srtp_and_audio_flows_both_ways(
        mode: str, request: pytest.FixtureRequest) -> None:
    """`veratur call --srtp mandatory` (offers RTP/SAVP only, refuses an answer without keys): answered, the
    stream is RTP/SAVP, the greeting reaches the caller (voiced audio) and the caller's RFC 4733 digits reach the
    session and come back (the demo echoes them on '#'): SRTP decrypted both ways."""
    worker: Worker = request.getfixturevalue(mode)
    mark, offset = worker.probe_mark(), worker.log_size()
    results, proc = caller(worker.uri, "--srtp", "mandatory", "--dtmf", "5#", "--wait", "0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = results
    print(f"\n{mode} worker: {result}")
    assert result["status"] == 200 and result["media_proto"] == "RTP/SAVP"
    assert isinstance(result["greeting_start"], float) and result["greeting_start"] < 1.0     # voiced audio
    assert worker.probed("dtmf", mark, "digit") == ["5", "#"]
    assert result["dtmf_received"] == "5#"
    assert "proto=RTP/SAVP" in worker.log_since(offset)
    worker.wait_idle()


def test_an_optional_worker_still_takes_a_plain_rtp_caller(optional: Worker) -> None:
    results, proc = caller(optional.uri, "--pause", "0.3", "--wait", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results[0]["status"] == 200 and results[0]["media_proto"] == "RTP/AVP"
    assert results[0]["greeting_start"] is not None
    optional.wait_idle()


def test_a_mandatory_worker_refuses_plain_rtp_with_488(mandatory: Worker) -> None:
    """pjsua itself answers an offer without keys 488 (the session never sees the call); the worker then serves
    the next SRTP call."""
    mark = mandatory.probe_mark()
    results, proc = caller(mandatory.uri, "--pause", "0.3", "--wait", "0")
    assert results and results[0]["status"] == 488, (results, proc.stderr[-2000:])
    with SipDialog("127.0.0.1", mandatory.port) as dialog:           # the same with a raw RTP/AVP offer
        rtp = RtpSocket()
        try:
            dialog.invite(sdp_body("127.0.0.1", rtp.port, PCMU_TE))
            final = dialog.wait_invite_final()
            assert final is not None and final.code == 488, final and final.text
            dialog.ack_failure(final)
        finally:
            rtp.close()
    assert mandatory.probe(mark) == []
    mandatory.wait_idle()
    results, proc = caller(mandatory.uri, "--srtp", "mandatory", "--pause", "0.3", "--wait", "0")
    assert results[0]["status"] == 200 and results[0]["media_proto"] == "RTP/SAVP", proc.stderr[-2000:]
    mandatory.wait_idle()


def test_an_off_worker_refuses_an_srtp_only_caller_cleanly_and_serves_the_next_call(worker: Worker) -> None:
    """sip.srtp off (the default): an RTP/SAVP-only offer gets 488, nothing crashes (the module's worker fixture
    checks its log at the end), and the next plain call is served."""
    results, proc = caller(worker.uri, "--srtp", "mandatory", "--pause", "0.3", "--wait", "0")
    assert results and results[0]["status"] == 488, (results, proc.stderr[-2000:])
    worker.wait_idle()
    results, proc = caller(worker.uri, "--pause", "0.3", "--wait", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results[0]["status"] == 200 and results[0]["media_proto"] == "RTP/AVP"
    assert results[0]["greeting_start"] is not None
    worker.wait_idle()


# ---- on the wire --------------------------------------------------------------------------------------------
class Capture(RtpSocket):
    """An RtpSocket that keeps every packet it receives."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        super().__init__("127.0.0.1")

    def count(self, data: bytes, peer: tuple[str, int]) -> None:
        super().count(data, peer)
        self.packets.append(data)


def _silence_share(payloads: list[bytes]) -> float:
    data = b"".join(payloads)
    return sum(b in PCMU_SILENCE for b in data) / max(1, len(data))


def test_on_the_wire_the_media_is_srtp_with_the_answers_key(mandatory: Worker) -> None:
    """A raw caller offers RTP/SAVP with its own key. The 200's SDP is RTP/SAVP with an a=crypto key of the
    worker's; every packet the worker sends is 10 bytes longer than PCMU (the tag), its payload is not μ-law
    (the greeting's silences are gone), and it authenticates and decrypts with the answer's key into the greeting.
    The caller's digit encrypted with the offered key reaches the session; the same digit sent as plain RTP is
    dropped (it does not authenticate)."""
    mark = mandatory.probe_mark()
    ours = srtp.new_inline_key()
    rtp = Capture()
    dialog = SipDialog("127.0.0.1", mandatory.port)
    try:
        dialog.invite(srtp_offer("127.0.0.1", rtp.port, ours))
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 200, final and final.text
        dialog.ack()
        answer = final.text.split("\r\n\r\n", 1)[1]
        assert re.search(r"^m=audio \d+ RTP/SAVP 0", answer, re.M), answer
        [(tag, suite, theirs)] = srtp.parse_crypto(answer)
        assert (tag, suite) == (1, srtp.SUITE) and theirs != ours
        assert dialog.remote is not None
        dest = (dialog.remote.host, dialog.remote.port)
        sender = srtp.SrtpContext(ours)
        stream = RtpStream(pt=0, ssrc=0x5E5C0DE5)
        rtp.send(sender.protect(stream.audio(pcaps.silence_pcm(1.6))), dest)        # the greeting plays meanwhile
        plain_nine = RtpStream(pt=101, ssrc=stream.ssrc, seq=stream.seq, ts=stream.ts).dtmf("9", 101, 120)
        rtp.send(plain_nine, dest)
        stream.seq += len(plain_nine)
        rtp.send(sender.protect(stream.dtmf("7", 101, 120) + stream.audio(pcaps.silence_pcm(0.6))), dest)
        deadline = time.monotonic() + 3
        while not mandatory.probed("dtmf", mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        dialog.request("BYE")
        assert dialog.wait("BYE", 3.0) is not None
    finally:
        dialog.close()
        rtp.close()
    received = [p for p in rtp.packets if p[1] & 0x7F == 0]
    clear = srtp.SrtpContext(theirs).unprotect(received)
    decrypted = [p[12:] for p in clear if p is not None]
    voiced = sum(any(b not in PCMU_SILENCE for b in payload) for payload in decrypted)
    wire = [p[12:-srtp.TAG_LEN] for p in received]
    print(f"\nreceived {len(received)} packets, lengths {sorted({len(p) for p in received})}; authenticated "
          f"{len(decrypted)}, voiced after decryption {voiced}; silence codes on the wire "
          f"{_silence_share(wire):.3f}, after decryption {_silence_share(decrypted):.3f}; "
          f"digits {mandatory.probed('dtmf', mark, 'digit')}")
    assert len(received) >= 80 and {len(p) for p in received} == {12 + 160 + srtp.TAG_LEN}
    assert len(decrypted) == len(received)                       # every packet authenticates with the answer's key
    assert voiced >= 40                                          # the 1.2 s greeting
    assert _silence_share(decrypted) > 0.2                       # its silences, and the call's silence after it
    assert _silence_share(wire) < 0.02                           # ciphertext: ~2/256 by chance
    assert mandatory.probed("dtmf", mark, "digit") == ["7"]      # the plain '9' did not authenticate
    mandatory.wait_idle()


# ---- configuration --------------------------------------------------------------------------------------------
def test_srtp_settings_are_validated() -> None:
    assert (SipConfig().srtp, SipConfig().srtp_secure_signaling) == ("off", 1)
    assert SipConfig(srtp=False).srtp == "off"                  # YAML's bare `off`
    assert SipConfig(srtp="mandatory", srtp_secure_signaling=0).srtp == "mandatory"
    assert SipConfig(srtp="optional", tls={"enabled": True}).srtp_secure_signaling == 1
    for bad, message in (({"srtp": "yes"}, "'off', 'optional' or 'mandatory'"),
                         ({"srtp_secure_signaling": 3}, "0, 1 or 2"),
                         ({"srtp": "mandatory"}, "takes SDES keys only over TLS"),
                         ({"srtp": "optional", "srtp_secure_signaling": 2, "tls": {"enabled": True},
                           "use_kamailio": False}, "takes SDES keys only over TLS"),
                         ({"srtp": "optional", "srtp_secure_signaling": 2, "tls": {"enabled": True},
                           "remote_workers": ["10.0.0.2:5070"]}, "end to end")):
        with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
            SipConfig(**bad)


def test_the_srtp_key_derivation_matches_rfc_3711() -> None:
    """RFC 3711 B.3: master key and salt -> session encryption key, salt and authentication key."""
    import base64
    master = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139") + bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
    ctx = srtp.SrtpContext(base64.b64encode(master).decode())
    assert ctx.enc_key.hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"
    assert ctx.salt.hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert ctx.auth_key.hex().upper() == "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"
    packet = struct.pack("!BBHII", 0x80, 0, 7, 160, 1) + bytes(160)
    protected = ctx.protect([packet])[0]
    assert srtp.SrtpContext(ctx.inline).unprotect([protected]) == [packet]
    assert srtp.SrtpContext(srtp.new_inline_key()).unprotect([protected]) == [None]


# ---- the front door -----------------------------------------------------------------------------------------
@needs_tls_module
@pytest.mark.timeout(120)
async def test_the_front_door_takes_sdes_keys_only_over_tls(tmp_path: Path) -> None:
    """sip.srtp mandatory, srtp_secure_signaling 1 (the default), a real Kamailio with TLS and a real pjsua2
    worker behind it: an RTP/SAVP offer over TLS is relayed and answered RTP/SAVP with a key; the same offer over
    UDP gets 488 from the front door (Warning 399) without reaching the worker; a plain RTP/AVP offer over UDP
    passes the front door and gets the worker's own 488 (mandatory)."""
    tls_port = free_port_block(1)
    _, settings = write_settings(tmp_path, sip={"workers": 1, "transports": ["udp"], "srtp": "mandatory",
                                                "tls": {"enabled": True, "port": tls_port}})
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match="takes SDES keys only over TLS"):
        write_settings(tmp_path / "x", sip={"srtp": "mandatory"})
    logs = tmp_path / "logs"
    logs.mkdir()
    async with run_kamailio(settings, logs) as k:
        assert "reason=srtp_keys_in_clear" in k.paths.cfg.read_text()
        config = dataclasses.replace(EdgeConfig.from_settings(settings, settings.sip.worker_port(0), "srtp/w0"),
                                     transports=("udp",), randomize_rtp_port=True,
                                     allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
        assert (config.srtp, config.srtp_secure_signaling) == ("mandatory", 0)
        answered: list[str] = []
        edge = SipEdge(config, on_call=lambda leg: answered.append(leg.info.call_id))
        await edge.start()
        cert = k.paths.cfg.parent / "tls" / "veratur-sip.crt"
        trunk = await asyncio.to_thread(TlsSip, tls_port, cert)
        try:
            lhost, lport = trunk.local[0], trunk.local[1]
            offer = srtp_offer(HOST, free_port_block(2, 40000, 50000), srtp.new_inline_key())
            headers: dict[str, list[str]] = {}
            first, body, cseq, call_id, branch = "", "", 0, uuid.uuid4().hex, ""
            for cseq in range(1, 11):               # until the dispatcher has probed the worker into rotation
                branch = f"z9hG4bK{uuid.uuid4().hex[:12]}"
                trunk.send(f"INVITE sip:2281234567@{HOST}:{tls_port};transport=tls SIP/2.0\n"
                           f"Via: SIP/2.0/TLS {lhost}:{lport};branch={branch};rport\nMax-Forwards: 70\n"
                           f"From: <sip:2281234567@{lhost}>;tag=t{cseq}\nTo: <sip:portal@{HOST}>\n"
                           f"Call-ID: {call_id}-{cseq}\nCSeq: {cseq} INVITE\n"
                           f"Contact: <sip:trunk@{lhost}:{lport};transport=tls>\nContent-Type: application/sdp\n"
                           f"Content-Length: {len(offer.encode())}\n\n" + offer.replace("\r\n", "\n"))
                first, headers, body = await asyncio.to_thread(trunk.final, 15.0)
                if first.startswith("SIP/2.0 200"):
                    break
                trunk.send(f"ACK sip:2281234567@{HOST}:{tls_port};transport=tls SIP/2.0\n"    # a 503: ACK, again
                           f"Via: SIP/2.0/TLS {lhost}:{lport};branch={branch};rport\nMax-Forwards: 70\n"
                           f"From: <sip:2281234567@{lhost}>;tag=t{cseq}\nTo: {headers['to'][0]}\n"
                           f"Call-ID: {call_id}-{cseq}\nCSeq: {cseq} ACK\nContent-Length: 0\n\n")
                await asyncio.sleep(1.0)
            assert first.startswith("SIP/2.0 200"), (first, k.log_text()[-1500:])
            assert re.search(r"^m=audio \d+ RTP/SAVP 0", body, re.M) and srtp.parse_crypto(body), body
            route = ", ".join(reversed([r.strip() for value in headers["record-route"] for r in value.split(",")]))
            contact = re.search(r"<([^>]+)>", headers["contact"][0]).group(1)     # type: ignore[union-attr]
            trunk.send(f"ACK {contact} SIP/2.0\nVia: SIP/2.0/TLS {lhost}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]}"
                       f";rport\nFrom: <sip:2281234567@{lhost}>;tag=t{cseq}\nTo: {headers['to'][0]}\n"
                       f"Call-ID: {call_id}-{cseq}\nRoute: {route}\nMax-Forwards: 70\nCSeq: {cseq} ACK\n"
                       f"Content-Length: 0\n\n")
            await asyncio.sleep(0.5)
            assert answered and answered[-1] == f"{call_id}-{cseq}"

            def over_udp(body: str) -> tuple[int, str]:
                with SipDialog(HOST, settings.sip.port) as dialog:
                    dialog.invite(body)
                    final = dialog.wait_invite_final(15.0)
                    assert final is not None
                    dialog.ack_failure(final)
                    return final.code, final.header("Warning") or ""

            calls = len(answered)
            code, warning = await asyncio.to_thread(over_udp, srtp_offer(HOST, 40002, srtp.new_inline_key()))
            assert code == 488 and "only over TLS" in warning, (code, warning)
            code, warning = await asyncio.to_thread(over_udp, sdp_body(HOST, 40002, PCMU_TE))
            assert code == 488 and "only over TLS" not in warning, (code, warning)     # the worker's own 488
            assert len(answered) == calls
            assert "reason=srtp_keys_in_clear" in k.log_text()
        finally:
            trunk.close()
            await edge.stop(0)
