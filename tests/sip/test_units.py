"""Unit tests of the SIP edge's pure parts: header extraction, the leg's frame batching, the fast vector read,
the pcap writers. No network."""
from __future__ import annotations

import asyncio
import struct
import threading
from pathlib import Path

import pjsua2 as pj

from ivr.call.leg import AudioIn, CallInfo, DtmfIn, HangupIn, TransferResult
from ivr.sip.headers import host_of, parse_request_head, uri_user
from ivr.sip.leg import SipLeg
from ivr.sip.media_port import read_byte_vector
from testkit import pcaps

INVITE = (
    "INVITE sip:4000@10.0.0.1:5070;transport=udp SIP/2.0\r\n"
    "v: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1\r\n"
    'f: "Ana" <sip:+522281234567@pbx.example>;tag=1\r\n'
    "t: <sip:portal@10.0.0.1>\r\n"
    "i: abc@pbx\r\n"
    "X-Veratur-Case: VER-2024-0001\r\n"
    "X-Veratur-Lang:\r\n es-MX\r\n"
    "User-to-User: 5645;encoding=hex\r\n"
    "Content-Length: 0\r\n\r\nv=0\r\nX-Not-A-Header: body\r\n")


def test_request_head_compact_forms_folding_and_passed_headers() -> None:
    head = parse_request_head(INVITE)
    assert head.method == "INVITE" and head.get("Call-ID") == "abc@pbx"
    assert uri_user(head.get("from")) == "+522281234567"
    assert uri_user(head.request_uri) == "4000"
    assert head.passed == {"X-Veratur-Case": "VER-2024-0001", "X-Veratur-Lang": "es-MX",
                           "User-to-User": "5645;encoding=hex"}


def test_uri_user_and_host_forms() -> None:
    assert uri_user("<tel:2281234567>") == "2281234567"
    assert uri_user("sip:veratur@127.0.0.1:5060;transport=tcp") == "veratur"
    assert uri_user("garbage") == ""
    assert host_of("127.0.0.1:5060") == "127.0.0.1"
    assert host_of("[::1]:5060") == "::1"


class _Owner:
    async def hangup_leg(self, leg: SipLeg, reason: str) -> None:
        leg.deliver_hangup(reason)

    async def transfer_leg(self, leg: SipLeg, target_uri: str, headers: dict[str, str]) -> TransferResult:
        return TransferResult(True, 200)

    async def send_dtmf(self, leg: SipLeg, digits: str) -> None:
        return None


async def test_leg_batches_frames_from_another_thread_and_ends_with_hangup() -> None:
    loop = asyncio.get_running_loop()
    leg = SipLeg(CallInfo("c1", "2281234567", "veratur", "w0"), 8000, loop, _Owner())
    frame = bytes(range(256)) + bytes(64)

    def media_thread() -> None:
        for _ in range(10):
            leg.rx_frame(frame)
        leg.deliver_dtmf("5")
        leg.deliver_hangup("bye")

    leg.pump()                                                    # nothing received yet: no event
    for _ in range(4):
        leg.rx_frame(frame)
    leg.pump()                                                    # what the edge's pump task does
    threading.Thread(target=media_thread).start()
    events = [e async for e in leg.events()]
    audio = [e for e in events if isinstance(e, AudioIn)]
    assert len(audio[0].frames) == 4                              # one batch per pump, not one per frame
    assert sum(len(a.frames) for a in audio) == 14                # nothing lost, the tail flushed at hang-up
    assert [e.digit for e in events if isinstance(e, DtmfIn)] == ["5"]
    assert events[-1] == HangupIn("bye")
    assert leg.ended


async def test_leg_playback_frames_padding_underrun_and_clear() -> None:
    leg = SipLeg(CallInfo("c2", "", "", "w0"), 8000, asyncio.get_running_loop(), _Owner())
    leg.play(b"\x01\x00" * 250)                                       # 500 bytes = 1.56 frames
    assert leg.queued_playback_ms() == 40
    first, second = leg.tx_frame(), leg.tx_frame()
    assert first is not None and second is not None and second == b"\x01\x00" * 90 + bytes(140)
    assert leg.tx_frame() is None and leg.tx_underruns == 1
    leg.play(bytes(3200))
    leg.clear_playback()
    assert leg.queued_playback_ms() == 0


def test_fast_byte_vector_read_matches_the_slow_one() -> None:
    data = bytes(range(256)) + b"\x7f" * 64
    vector = pj.ByteVector(data)
    assert read_byte_vector(vector, 320) == bytes(vector) == data
    assert read_byte_vector(pj.ByteVector(), 320) == b""


def test_pcmu_pcap_has_20_ms_packets_of_160_bytes(tmp_path: Path) -> None:
    path = pcaps.write_pcmu_pcap(tmp_path / "a.pcap", pcaps.tone_pcm(440, 0.1))
    data = path.read_bytes()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4
    first = data[24:]
    incl = struct.unpack("<I", first[8:12])[0]
    rtp = first[16 + 14 + 20 + 8:16 + incl]
    assert rtp[1] & 0x7F == pcaps.PCMU_PT and len(rtp) == 12 + 160
    assert len(data) == 24 + 5 * (16 + incl)
