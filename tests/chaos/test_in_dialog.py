"""In-dialog abuse (issue 13): a caller in an established call sends a re-INVITE/UPDATE storm (broken SDP too), a
SIP INFO DTMF flood, an RFC 4733 event flood and RTP garbage (random bytes, a wrong payload type, datagrams of 4,000
bytes and more, RTP from another address) while another call on the same worker goes on. Real Kamailio (generated
config) in front of one real pjsua2 worker (`veratur up` with the SIP-only demo handler, whose probe file says
what reached the call's handler). The attacked call goes on or ends cleanly, the other call keeps its audio and
its digits, the front door relays at most `sip.in_dialog_requests_per_second` of the storm, the worker hands at most
`sip.max_dtmf_per_second` digits a second to a call's handler."""
from __future__ import annotations

import asyncio
import os
import queue
import random
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pydantic
import pytest

from foundation.config import SipConfig
from testkit.sipdialog import RtpSocket, RtpStream, SipDialog, sdp_body
from tests.node.conftest import HOST, write_settings
from tests.node.node_runner import Node, run_node
from tests.node.test_interop_door import NODE_ARGS, PCMU_TE, loads, probed, wait_loads_zero
from veratur import kamailio

pytestmark = pytest.mark.sip

PER_DIALOG = 20          # sip.in_dialog_requests_per_second (the shipped default)
DTMF_CAP = 20            # sip.max_dtmf_per_second (the shipped default)
ATTACKER = "127.0.0.8"
STRANGER = "127.0.0.9"
SILENCE = bytes(320)     # 20 ms of s16le silence at 8 kHz


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("in-dialog")
    config, settings = write_settings(tmp, sip={"workers": 1, "in_dialog_requests_per_second": PER_DIALOG,
                                                "max_dtmf_per_second": DTMF_CAP})
    with run_node(config, settings, *NODE_ARGS) as running:
        yield running


class TimedRtp(RtpSocket):
    """An RtpSocket that also keeps when each packet arrived (the other call's audio during the attack)."""

    def __init__(self, host: str = HOST) -> None:
        self.arrivals: list[float] = []
        super().__init__(host)

    def count(self, data: bytes, peer: tuple[str, int]) -> None:
        super().count(data, peer)
        self.arrivals.append(time.monotonic())

    def largest_gap_s(self, start: float, end: float) -> float:
        times = [start, *(t for t in self.arrivals if start <= t <= end), end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


@contextmanager
def call(node: Node, host: str = HOST) -> Iterator[tuple[SipDialog, TimedRtp]]:
    """An answered call from `host`; hung up after (or found ended by the far end)."""
    rtp = TimedRtp(host)
    dialog = SipDialog(HOST, node.settings.sip.port, local_host=host)
    offer = sdp_body(host, rtp.port, PCMU_TE)
    dialog.answer_sdp = offer
    try:
        dialog.invite(offer)
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 200, final and final.text
        dialog.ack()
        yield dialog, rtp
    finally:
        if dialog.to_tag and not any(r.method == "BYE" for r in dialog.requests):
            dialog.request("BYE")
            dialog.wait("BYE", 3.0)
        dialog.close()
        rtp.close()


def media(dialog: SipDialog) -> tuple[str, int]:
    assert dialog.remote is not None
    return dialog.remote.host, dialog.remote.port


@dataclass
class Victim:
    """The other call on the worker: sends audio (silence) and two RFC 4733 digits while the attack runs."""

    dialog: SipDialog
    rtp: TimedRtp
    seconds: float
    started: float = 0.0
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        stream = RtpStream(pt=0, ssrc=0x5EC0DE)
        third = int(self.seconds / 3 / 0.02)
        packets = stream.audio(SILENCE * third)
        packets += stream.dtmf("1", 101, 120)
        packets += stream.audio(SILENCE * third)
        packets += stream.dtmf("2", 101, 120)
        packets += stream.audio(SILENCE * third)
        self.thread = threading.Thread(target=self.rtp.send, args=(packets, media(self.dialog)), daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self.thread.start()

    def finish(self, node: Node) -> dict[str, float]:
        self.thread.join(self.seconds + 10)
        end = time.monotonic()
        digits = wait_digits(node, self.dialog.call_id, 2)
        got = sum(self.started <= t <= end for t in self.rtp.arrivals)
        figures = {"digits": "".join(digits), "packets": got, "expected": round((end - self.started) / 0.02),
                   "largest_gap_s": round(self.rtp.largest_gap_s(self.started, end), 3)}
        print(f"other call during the attack: {figures}")
        assert digits == ["1", "2"], digits                      # its dialogue heard every key, once
        assert figures["largest_gap_s"] < 1.0, figures           # no dead air on the other call
        return figures


def wait_digits(node: Node, call_id: str, count: int, timeout_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(probed(node, "dtmf", call_id)) < count:
        time.sleep(0.05)
    time.sleep(0.3)                                              # and nothing more behind them
    return [str(r["digit"]) for r in probed(node, "dtmf", call_id)]


def rejected(node: Node) -> int:
    return asyncio.run(kamailio.in_dialog_rejected(kamailio.KamailioPaths.for_settings(node.settings)))


def worker_pid(node: Node) -> int:
    return node.workers()[0].pid


def still_up(dialog: SipDialog) -> bool:
    """The attacked call is still up (a re-INVITE with a good offer is answered 200 by the worker), or it was ended
    cleanly by the worker (a BYE came); anything else (481, no answer) is a call lost without a hang-up."""
    time.sleep(1.1)                                              # out of the attack's rate window
    while not dialog.responses.empty():                          # the attack's answers (and retransmissions)
        dialog.responses.get_nowait()
    if any(r.method == "BYE" for r in dialog.requests):
        return False
    offer = sdp_body(dialog.local_host, 40000, PCMU_TE, version=9)
    answer = dialog.reinvite_accepted(offer, timeout_s=5.0)
    if any(r.method == "BYE" for r in dialog.requests):
        return False
    assert answer is not None and answer.code == 200, answer and answer.text
    dialog.ack()
    return True


def ack_2xx(dialog: SipDialog, answer_text: str) -> None:
    """ACK a 2xx to one of the storm's re-INVITEs end to end (else the worker retransmits it and ends the call)."""
    cseq = int(answer_text.split("CSeq:", 1)[1].split()[0])
    dialog._send(dialog._message("ACK", dialog.remote_target, cseq, f"z9hG4bK-ack-{secrets.token_hex(6)}", "", "",
                                 "", route=True))


def test_reinvite_and_update_storm_is_limited_at_the_door_and_the_other_call_goes_on(node: Node) -> None:
    """600 re-INVITEs and UPDATEs at ~300/s in one call, a third with broken SDP: the front door relays at most
    PER_DIALOG a second (503 + Retry-After for the rest); the worker stays up, the call is still up (or ended with
    a BYE), the other call keeps its audio and both its digits."""
    before = rejected(node)
    pid = worker_pid(node)
    with call(node) as (other, other_rtp), call(node, ATTACKER) as (attacker, attacker_rtp):
        victim = Victim(other, other_rtp, 3.0)
        good = sdp_body(ATTACKER, attacker_rtp.port, PCMU_TE)
        broken = ["v=0\r\nm=audio x RTP/AVP\r\n", good.replace("m=audio", "m=vid"), "\x00garbage" * 20,
                  good.replace("c=IN IP4", "c=IN IP9")]
        victim.start()
        sent, started = 0, time.monotonic()
        finals: dict[str, int] = {}

        def drain() -> None:
            while True:
                try:
                    response = attacker.responses.get_nowait()
                except queue.Empty:
                    return
                if response.code < 200:
                    continue
                finals[(response.header("CSeq") or "").split()[0]] = response.code     # retransmissions once
                if 200 <= response.code < 300 and (response.header("CSeq") or "").endswith("INVITE"):
                    ack_2xx(attacker, response.text)

        for index in range(600):
            body = broken[index % 4] if index % 3 == 0 else good
            if index % 2:
                attacker.request("UPDATE", body)
            else:
                attacker.reinvite(body)
            sent += 1
            drain()
            time.sleep(max(started + (index + 1) / 300 - time.monotonic(), 0))
        storm_s = time.monotonic() - started
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(finals) < sent:
            drain()
            time.sleep(0.05)
        codes: dict[int, int] = {}
        for code in finals.values():
            codes[code] = codes.get(code, 0) + 1
        refused = rejected(node) - before
        windows = int(storm_s) + 2
        print(f"\nstorm: {sent} re-INVITE/UPDATE in {storm_s:.1f} s; door refused {refused}; final answers read "
              f"{dict(sorted(codes.items()))}")
        victim.finish(node)
        relayed = sum(n for code, n in codes.items() if code != 503)
        assert relayed <= windows * PER_DIALOG, codes
        assert refused >= sent - windows * PER_DIALOG
        assert codes.get(503, 0) <= refused
        attacked_up = still_up(attacker)
        print(f"attacked call still up: {attacked_up}")
    assert worker_pid(node) == pid                              # the worker never restarted
    wait_loads_zero(node)


def test_info_dtmf_flood_is_limited_and_the_dialogue_sees_at_most_the_cap(node: Node) -> None:
    """500 INFO application/dtmf-relay at ~250/s: the door relays PER_DIALOG a second, the call's handler gets at
    most DTMF_CAP digits a second of those; the other call's digits all arrive."""
    before = rejected(node)
    with call(node) as (other, other_rtp), call(node, ATTACKER) as (attacker, _):
        victim = Victim(other, other_rtp, 2.5)
        victim.start()
        started = time.monotonic()
        for index in range(500):
            attacker.request("INFO", "Signal=5\r\nDuration=100\r\n", content_type="application/dtmf-relay")
            time.sleep(max(started + (index + 1) / 250 - time.monotonic(), 0))
        flood_s = time.monotonic() - started
        victim.finish(node)
        time.sleep(0.5)
        digits = len(probed(node, "dtmf", attacker.call_id))
        refused = rejected(node) - before
        windows = int(flood_s) + 2
        print(f"\nINFO flood: 500 in {flood_s:.1f} s; door refused {refused}; digits the handler got: {digits}")
        assert refused >= 500 - windows * PER_DIALOG
        assert 0 < digits <= windows * min(PER_DIALOG, DTMF_CAP)
        still_up(attacker)
    wait_loads_zero(node)


def test_rfc4733_event_flood_on_the_media_port_is_capped_by_the_worker(node: Node) -> None:
    """2,000 distinct RFC 4733 events ('5' and '6' in turn, end bit, each its own timestamp) at ~1000/s straight to the worker's media
    port (no proxy in the way): the handler gets at most DTMF_CAP a second; the other call keeps audio and digits."""
    mark = len(node.stderr)
    with call(node) as (other, other_rtp), call(node, ATTACKER) as (attacker, attacker_rtp):
        victim = Victim(other, other_rtp, 3.0)
        victim.start()
        stream = RtpStream(pt=101, ssrc=0xF100D)
        packets = []
        for index in range(2000):     # keys 5 and 6 in turn: pjmedia takes a repeat of one key for the same event
            packets.append(stream._packet(101, stream.ts, struct.pack("!BBH", 5 + index % 2, 0x80 | 10, 400), True))
            stream.ts += 400
        started = time.monotonic()
        attacker_rtp.send(packets, media(attacker), interval_s=0.001)
        flood_s = time.monotonic() - started
        victim.finish(node)
        time.sleep(0.5)
        digits = len(probed(node, "dtmf", attacker.call_id))
        windows = int(flood_s) + 2
        print(f"\nRFC 4733 flood: 2000 events in {flood_s:.1f} s; digits the handler got: {digits} "
              f"(cap {DTMF_CAP}/s)")
        assert 0 < digits <= windows * DTMF_CAP
        assert any("dtmf flood" in line for line in node.stderr[mark:])
        still_up(attacker)
    wait_loads_zero(node)


def test_rtp_garbage_to_the_media_port_leaves_both_calls_up(node: Node) -> None:
    """Random bytes, RTP with a payload type not negotiated, datagrams of 4,000-9,000 bytes and RTP from an address
    not in the SDP, at ~500/s for 3 s to the attacked call's media port (and the stranger's to the other call's):
    the worker stays up, the other call keeps its audio and digits, the attacked call still answers."""
    pid = worker_pid(node)
    rng = random.Random(4733)
    with call(node) as (other, other_rtp), call(node, ATTACKER) as (attacker, attacker_rtp), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind((STRANGER, 0))
        victim = Victim(other, other_rtp, 3.0)
        stream = RtpStream(pt=0, ssrc=0xBADBAD)
        kinds: dict[str, int] = {}
        victim.start()
        started = time.monotonic()
        for index in range(1500):
            kind = ("random", "wrong_pt", "oversized", "stranger", "audio")[index % 5]
            if kind == "random":
                packet = os.urandom(rng.randint(1, 400))
            elif kind == "wrong_pt":
                packet = stream._packet(rng.choice((8, 18, 96, 127)), stream.ts, os.urandom(160))
            elif kind == "oversized":
                packet = stream._packet(0, stream.ts, os.urandom(rng.randint(4000, 9000)))
            else:
                packet = stream.audio(SILENCE)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "stranger":
                stranger.sendto(packet, media(attacker))
                stranger.sendto(packet, media(other))
            else:
                attacker_rtp.sock.sendto(packet, media(attacker))
            time.sleep(max(started + (index + 1) / 500 - time.monotonic(), 0))
        print(f"\nRTP garbage: {kinds} in {time.monotonic() - started:.1f} s")
        victim.finish(node)
        assert still_up(attacker)
    assert worker_pid(node) == pid
    wait_loads_zero(node)
    assert not any(loads(node).values())


def test_in_dialog_limits_render_per_setting_and_bad_values_stop_start_up() -> None:
    """0 turns a limit off (nothing in the script); a negative or absurd value is refused when the config loads."""
    assert kamailio.in_dialog_limit_lines(0, 0) == ""
    only_dialog = kamailio.in_dialog_limit_lines(20, 0)
    assert '"c:" + $ci' in only_dialog and '"s:" + $si' not in only_dialog and "> 20)" in only_dialog
    assert 'is_method("BYE|ACK")' in only_dialog           # the caller can always hang up
    for bad in ({"in_dialog_requests_per_second": -1}, {"max_dtmf_per_second": 0},
                {"in_dialog_requests_per_source_per_second": "many"}):
        with pytest.raises(pydantic.ValidationError):
            SipConfig(**bad)
