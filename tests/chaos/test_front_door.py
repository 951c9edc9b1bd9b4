"""The node's SIP front door against what an outsider or a broken network sends, with real Kamailio in front of
real pjsua2 workers (`veratur up` with the SIP-only demo handler): oversized requests, a transaction a worker
never answers, a worker killed during calls."""
from __future__ import annotations

import asyncio
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from case_bridge.service import CaseService
from testkit.demo_handler import DEMO_APP
from testkit.sipraw import RawSip, invite
from tests.node.conftest import HOST, free_port_block, run_kamailio, start_sipp, write_settings
from tests.node.node_runner import run_node
from veratur import kamailio
from veratur.supervisor import worker_node_name

pytestmark = pytest.mark.sip

SCENARIOS = Path(__file__).parent / "scenarios"
NODE_ARGS = ("--no-dialogue", "--no-web", "--ivr-app", DEMO_APP)
BYE_AFTER_KILL_GOAL_S = 3.0


def padded_invite(port: int, raw: RawSip, subject_chars: int, *, codec: str = "0 PCMU/8000",
                  proto: str = "RTP/AVP") -> bytes:
    """An INVITE to the front door with a `Subject:` of `subject_chars` characters (a large but legal request).
    proto="RTP/SAVP": an offer the front door relays (a codec it serves) and a worker refuses with 488 (no SRTP)."""
    pt, name = codec.split(" ")
    packet = invite(HOST, port, raw.host, raw.port).replace(
        b"RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", f"{proto} {pt}\r\na=rtpmap:{pt} {name}".encode())
    head, body = packet.split(b"\r\n\r\n", 1)
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
    return head + b"\r\nSubject: " + b"s" * subject_chars + b"\r\n\r\n" + body


def states(settings) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    return asyncio.run(kamailio.worker_states(kamailio.KamailioPaths.for_settings(settings)))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """One node (2 demo workers behind Kamailio) shared by the tests of this module that do not kill anything."""
    tmp = tmp_path_factory.mktemp("front-door")
    config, settings = write_settings(tmp, sip={"workers": 2, "new_calls_per_source_per_second": 10})
    with run_node(config, settings, *NODE_ARGS) as running:
        yield running


def test_oversized_invite_gets_513_and_no_worker_is_marked_down(node) -> None:  # type: ignore[no-untyped-def]
    port = node.settings.sip.port
    with RawSip() as raw:
        for _ in range(3):        # each of these used to cost a worker its place in rotation
            raw.send(padded_invite(port, raw, 4500), (HOST, port))
            answers = raw.collect(1, 3.0)
            assert answers.codes() == [513], answers.finals
        # Large but within what a worker can take (relayed over TCP, RFC 3261 18.1.1): the worker itself answers
        # (488: its codec is not offered), so the whole message arrived and was parsed.
        raw.send(padded_invite(port, raw, 2500, codec="18 G729/8000"), (HOST, port))
        answers = raw.collect(1, 5.0)
        assert answers.codes() == [488], answers.finals
    time.sleep(kamailio.FR_TIMER_MS / 1000 + 0.5)
    assert all(flags.startswith("A") for flags, _ in states(node.settings).values()), states(node.settings)
    assert "Subject" not in node.output() and "s" * 200 not in node.output()   # nothing dumped into the log


def test_a_normal_call_goes_through_after_the_oversized_ones(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenario = Path(__file__).parent.parent.parent / "testkit" / "scenarios" / "uac_call.xml"
    proc = start_sipp(["-sf", str(scenario), "-i", HOST, "-p", str(free_port_block(1)),
                       "-mp", str(free_port_block(4, 40000, 50000)), "-m", "2", "-l", "2", "-r", "5", "-d", "300",
                       "-recv_timeout", "10000", f"{HOST}:{node.settings.sip.port}"], tmp_path, "after")
    assert proc.wait(30) == 0, (tmp_path / "after.log").read_text()[-2000:]


class SilentWorker:
    """A stand-in worker that answers OPTIONS (so probing finds it healthy) and never answers an INVITE."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, port))
        self.sock.settimeout(0.2)
        self.invites = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            if text.startswith("INVITE"):
                self.invites += 1
                continue
            if not text.startswith("OPTIONS"):
                continue
            keep = [line for line in text.split("\r\n")
                    if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq", "to")]
            keep = [f"{line};tag={secrets.token_hex(4)}" if line.lower().startswith("to") else line for line in keep]
            self.sock.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                             peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


async def test_one_unanswered_invite_does_not_take_a_healthy_worker_out(tmp_path: Path) -> None:
    _, settings = write_settings(tmp_path, sip={"workers": 1, "transports": ["udp"]})
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = SilentWorker(settings.sip.worker_port(0))
    try:
        async with run_kamailio(settings, logs) as k:
            with RawSip() as raw:
                raw.send(invite(HOST, settings.sip.port, raw.host, raw.port), (HOST, settings.sip.port))
                answers = await asyncio.to_thread(raw.collect, 1, kamailio.FR_TIMER_MS / 1000 + 3)
            assert worker.invites >= 1
            assert answers.codes() == [503], answers.finals          # no worker answered: the caller is told
            flags = (await kamailio.worker_states(k.paths))["w0"][0]
            assert flags.startswith("A"), f"worker marked {flags} after one unanswered INVITE"
            assert "event=worker_timeout" in k.log_text()
    finally:
        worker.close()


def test_killed_workers_calls_get_a_bye_and_their_records_are_closed_lost(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = node.settings
    # The module's node, last test here: the supervisor restarts the killed worker.
    service = CaseService.from_url(settings.database_url)
    started = datetime.now(UTC) - timedelta(seconds=1)
    # What the engine's recorder writes when it answers (the demo handler records nothing itself).
    for index in (0, 1):
        service.link_call(f"held-w{index}@test", "2281234567",
                          node=worker_node_name(settings.node_name, index), started_at=started)
    caller = start_sipp(["-sf", str(SCENARIOS / "uac_until_bye.xml"), "-i", HOST,
                         "-p", str(free_port_block(1)), "-mp", str(free_port_block(4, 40000, 50000)),
                         "-m", "1", "-l", "1", "-recv_timeout", "25000", f"{HOST}:{settings.sip.port}"],
                        tmp_path, "caller")
    deadline = time.monotonic() + 15
    busy: list[str] = []
    while time.monotonic() < deadline and not busy:
        busy = [duid for duid, (_, load) in states(settings).items() if load == 1]
        time.sleep(0.2)
    assert busy, states(settings)
    victim = int(busy[0][1:])
    killed_at = time.monotonic()
    node.workers()[victim].send_signal(signal.SIGKILL)
    try:
        code = caller.wait(20)
    except subprocess.TimeoutExpired:
        code = None
    bye_after_s = time.monotonic() - killed_at
    print(f"\nworker kill -> caller's BYE answered: {bye_after_s:.2f} s (goal < {BYE_AFTER_KILL_GOAL_S} s)")
    assert code == 0, (tmp_path / "caller.log").read_text()[-2000:]
    assert bye_after_s < BYE_AFTER_KILL_GOAL_S
    node.wait_for(rf"event=lost_calls_closed worker={victim} calls=1", 15)
    lost = service.get_call(f"held-w{victim}@test")
    other = service.get_call(f"held-w{1 - victim}@test")
    assert lost is not None and lost.disposition == "lost" and lost.ended_at is not None
    assert other is not None and other.ended_at is None
    service.close()


class _Reader(threading.Thread):
    """Reads a RawSip socket's answers while its requests are still being sent. Left unread through a 2 s flood, the
    socket's receive buffer (212,992 bytes by default: ~166 small datagrams on loopback) overflowed with the 503s,
    100 Trying and retransmitted 488s, and the kernel dropped the rest (RcvbufErrors): the old test read back only
    94 of 200 answers under load although Kamailio had sent them all."""

    def __init__(self, raw: RawSip) -> None:
        super().__init__(daemon=True)
        self.raw = raw
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        raw.sock.settimeout(0.1)
        self.finals: dict[str, tuple[int, str, bytes]] = {}
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                data, _ = self.raw.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            status = re.match(rb"SIP/2\.0 (\d{3}) ([^\r\n]*)", data)
            call_id = re.search(rb"\r\nCall-ID: *([^\r\n]+)", data)
            if status and call_id and int(status.group(1)) >= 200:
                self.finals.setdefault(call_id.group(1).decode(), (int(status.group(1)),
                                                                   status.group(2).decode(errors="replace"), data))

    def wait_for(self, count: int, timeout_s: float) -> dict[str, tuple[int, str, bytes]]:
        deadline = time.monotonic() + timeout_s
        while len(self.finals) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        self._done.set()
        self.join(2)
        return dict(self.finals)


def _counts_after(settings, before: dict[str, int], total: int, timeout_s: float) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Kamailio's own counts of new INVITEs since `before`, once it has decided on `total` of them (or the deadline)."""
    paths = kamailio.KamailioPaths.for_settings(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        now = asyncio.run(kamailio.front_door_counts(paths))
        delta = {name: now[name] - before[name] for name in now}
        if sum(delta.values()) >= total or time.monotonic() > deadline:
            return delta
        time.sleep(0.1)


@pytest.mark.parametrize(("name", "mangle", "status"), [
    ("lowercase method", lambda p: p.replace(b"INVITE", b"invite"), 405),     # request line and CSeq
    ("NUL byte in a header", lambda p: p.replace(b"\r\nSubject: ", b"\r\nX-Nul: a\x00b\r\nSubject: ", 1), 400),
    ("folded blank lines", lambda p: p.replace(b"\r\nSubject: ", b"\r\nFolded: a\r\n \r\n \r\nSubject: ", 1), 400),
])
def test_what_a_worker_would_drop_or_mismatch_is_refused_at_the_front_door(
        node, name: str, mangle, status: int) -> None:  # type: ignore[no-untyped-def]
    """Each of these, relayed, held a worker's call slot (32 s for the lowercase `invite` the worker answered but
    whose answer matched no transaction here; fr_timer per worker for the others, which pjsip drops unanswered):
    the fuzz run's legitimate callers then all got 503. They are refused here at once, nothing is dispatched."""
    port = node.settings.sip.port
    mark = len(node.stderr)
    with RawSip("127.0.0.5") as raw:
        raw.send(mangle(padded_invite(port, raw, 10, codec="18 G729/8000")), (HOST, port))
        answers = raw.collect(1, 3.0)
    assert answers.codes() == [status], name
    time.sleep(0.3)
    assert not any("event=call_dispatched" in line for line in node.stderr[mark:]), name
