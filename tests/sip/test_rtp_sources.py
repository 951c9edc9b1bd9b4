"""RTP from a stranger while the caller is silent (issue 13, "RTP bleed"): pjmedia latches the remote RTP address,
and with a caller that sends nothing (mute, hold, a UAS that does not stream) the first packet from anyone moves
the call's audio to the sender. Measured before `sip.rtp_sources` (real `veratur ivr --app demo`, a silent
`SipDialog` caller on 127.0.0.1, a stranger on 127.0.0.9 streaming to the worker's media port): the stranger got
all 180 packets of the call with the whole 1.2 s greeting (60 voiced packets), the caller none, and the stranger's
RFC 4733 digit reached the call; a caller who spoke 0.4 s and then fell silent lost the stream after 10 packets
(stranger 171 packets, 42 voiced). Now the kernel drops RTP from unsignalled sources (`ivr.sip.rtp_sources`):
the stranger gets nothing, the caller the whole greeting, and a silent call is hung up at the media timeout even
while the stranger streams. A source in `sip.rtp_trusted_networks` may still latch (a media gateway's address)."""
from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydantic
import pytest

from foundation.config import SipConfig
from ivr.sip.rtp_sources import attach_source_filter, signalled_hosts, source_program, trusted_networks
from testkit import pcaps
from testkit.sipdialog import RtpSocket, RtpStream, SipDialog, sdp_body
from tests.sip.harness import Worker

pytestmark = pytest.mark.sip

PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}
CALLER = "127.0.0.1"
STRANGER = "127.0.0.9"                  # another loopback address, as tests/chaos/test_in_dialog.py uses
PCMU_SILENCE = (0xFF, 0x7F)             # μ-law codes of zero: anything else is the portal's sound


class Listener(RtpSocket):
    """An RtpSocket that also counts voiced PCMU packets and the SSRCs it got."""

    def __init__(self, host: str) -> None:
        self.voiced = 0
        self.ssrcs: set[int] = set()
        super().__init__(host)

    def count(self, data: bytes, peer: tuple[str, int]) -> None:
        super().count(data, peer)
        self.ssrcs.add(struct.unpack("!I", data[8:12])[0])
        self.voiced += data[1] & 0x7F == 0 and any(b not in PCMU_SILENCE for b in data[12:])

    def figures(self) -> dict[str, object]:
        return {"packets": self.received, "voiced": self.voiced, "pt": self.payload_types,
                "ssrc": sorted(hex(s) for s in self.ssrcs)}


@contextmanager
def silent_call(worker: Worker) -> Iterator[tuple[SipDialog, Listener, Listener]]:
    """A call answered for a caller that sends no RTP, and a stranger's socket beside it."""
    caller, stranger = Listener(CALLER), Listener(STRANGER)
    dialog = SipDialog(CALLER, worker.port)
    offer = sdp_body(CALLER, caller.port, PCMU_TE)
    dialog.answer_sdp = offer
    try:
        dialog.invite(offer)
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 200, final and final.text
        dialog.ack()
        assert dialog.remote is not None
        yield dialog, caller, stranger
    finally:
        if dialog.to_tag and not any(r.method == "BYE" for r in dialog.requests):
            dialog.request("BYE")
            dialog.wait("BYE", 3.0)
        dialog.close()
        caller.close()
        stranger.close()
    worker.wait_idle()


def media_of(dialog: SipDialog) -> tuple[str, int]:
    assert dialog.remote is not None
    return dialog.remote.host, dialog.remote.port


def stranger_stream(seconds: float, digit_at_s: float = 1.0) -> list[bytes]:
    """A steady PCMU stream (silence, so it trips no utterance) with one RFC 4733 digit '7' in it."""
    stream = RtpStream(pt=0, ssrc=0x5742A9E5)
    packets = stream.audio(pcaps.silence_pcm(digit_at_s)) + stream.dtmf("7", 101, 120)
    return packets + stream.audio(pcaps.silence_pcm(seconds - digit_at_s))


def test_a_stranger_streaming_while_the_caller_is_silent_gets_none_of_the_portals_audio(worker: Worker) -> None:
    """The stranger streams from right after the ACK until the worker gives up on the silent call: it receives no
    RTP at all, the caller gets the greeting, the stranger's digit never reaches the call, and the call ends by
    the media timeout (4 s in the harness) although packets kept arriving at its port."""
    mark = worker.probe_mark()
    with silent_call(worker) as (dialog, caller, stranger):
        packets = stranger_stream(7.0)
        started = time.monotonic()
        for index, packet in enumerate(packets):
            if any(r.method == "BYE" for r in dialog.requests):
                break
            time.sleep(max(started + index * 0.02 - time.monotonic(), 0))
            stranger.sock.sendto(packet, media_of(dialog))
        sent_s = time.monotonic() - started
        time.sleep(0.3)
        print(f"\nstranger sent {index} packets in {sent_s:.1f} s; stranger got {stranger.figures()}; "
              f"caller got {caller.figures()}")
        assert stranger.received == 0, stranger.figures()          # before: 180 packets, 60 voiced
        assert caller.voiced >= 40, caller.figures()                # the 1.2 s greeting (60 packets) is the caller's
        assert len(caller.ssrcs) == 1
        assert worker.probed("dtmf", mark) == []                    # before: ['7'] from the stranger
        assert any(r.method == "BYE" for r in dialog.requests), "the stranger kept a silent call alive"
    assert worker.probed("ended", mark, "reason") == ["media_timeout"]


def test_a_caller_who_spoke_and_went_quiet_keeps_the_stream(worker: Worker) -> None:
    """pjmedia switches after 10 consecutive packets from a new address when the caller has sent before: a caller
    who talked 0.4 s then muted lost the stream to a steady stranger (171 of 199 packets went to the stranger)."""
    mark = worker.probe_mark()
    with silent_call(worker) as (dialog, caller, stranger):
        caller.send(RtpStream(pt=0, ssrc=0xCA11E5).audio(pcaps.silence_pcm(0.4)), media_of(dialog))
        stranger.send(stranger_stream(2.0, digit_at_s=0.5), media_of(dialog))
        time.sleep(0.3)
        print(f"\nstranger got {stranger.figures()}; caller got {caller.figures()}")
        assert stranger.received == 0, stranger.figures()
        assert caller.received >= 110 and caller.voiced >= 40, caller.figures()
        assert worker.probed("dtmf", mark) == []


def test_a_source_in_rtp_trusted_networks_may_latch(tmp_path: Path) -> None:
    """A media gateway listed in sip.rtp_trusted_networks sends RTP from an address no signalling names: pjmedia
    latches onto it as before (and this is what any stranger got before the filter)."""
    gateway = Worker(tmp_path, env={"VERATUR__SIP__RTP_TRUSTED_NETWORKS": "[127.0.0.8/30]"}).start()
    try:
        mark = gateway.probe_mark()
        with silent_call(gateway) as (dialog, caller, stranger):
            stranger.send(stranger_stream(2.0, digit_at_s=0.5), media_of(dialog))
            time.sleep(0.3)
            print(f"\ntrusted 'stranger' got {stranger.figures()}; caller got {caller.figures()}")
            assert stranger.voiced >= 20 and caller.voiced < stranger.voiced, stranger.figures()  # the greeting
            assert gateway.probed("dtmf", mark, "digit") == ["7"]
    finally:
        assert gateway.stop() == 0


# ---- the filter itself, on real sockets -----------------------------------------------------------------------
def test_the_kernel_filter_passes_only_the_listed_sources() -> None:
    networks = trusted_networks({"127.0.0.1", "0.0.0.0"}, [ipaddress.ip_network("127.0.0.8/30")])
    assert [str(n) for n in networks] == ["127.0.0.1/32", "127.0.0.8/30"]      # 0.0.0.0 (RFC 2543 hold) is none
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind((CALLER, 0))
        receiver.settimeout(0.2)
        attach_source_filter(receiver, networks)
        got = []
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.9", "127.0.0.12"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.bind((source, 0))
                sender.sendto(source.encode(), receiver.getsockname())
            try:
                got.append(receiver.recv(64).decode())
            except TimeoutError:
                pass
        assert got == ["127.0.0.1", "127.0.0.9"]


def test_hosts_networks_and_config() -> None:
    assert signalled_hosts("<sip:2281234567@203.0.113.5:5099;transport=udp>", "198.51.100.7:40000",
                           "127.0.0.1", "sip:gw.example.net", "[::1]:5060") == {"203.0.113.5", "198.51.100.7",
                                                                               "127.0.0.1"}
    assert len(source_program(trusted_networks([f"10.0.0.{i}" for i in range(100)]))) == 3 * 64 + 2
    with pytest.raises(ValueError):
        source_program([])
    assert SipConfig().rtp_sources == "signalled"
    for bad in ({"rtp_sources": "nat"}, {"rtp_trusted_networks": ["2001:db8::/32"]},
                {"rtp_trusted_networks": ["10.0.0.300/8"]}):
        with pytest.raises(pydantic.ValidationError):
            SipConfig(**bad)
