"""What carriers and PBXs send, through the node's front door (real Kamailio from the generated config in front
of a real pjsua2 worker, `veratur up` with the SIP-only demo handler): the door's own answers (488 + Warning for an
offer without our codecs, OPTIONS keep-alives with the methods we relay, INFO bodies) and in-dialog requests along
the route set (late offer, hold/unhold, UPDATE, INFO application/dtmf rewritten to dtmf-relay, CANCEL at once)."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit import pcaps
from testkit import sipp as sippkit
from testkit.demo_handler import DEMO_APP, PROBE_FILE
from testkit.rawsip import RawSip, options
from testkit.sipdialog import RtpSocket, RtpStream, SipDialog, sdp_body
from tests.node.conftest import HOST, write_settings
from tests.node.node_runner import Node, run_node
from veratur import kamailio

pytestmark = pytest.mark.sip

NODE_ARGS = ("--no-dialogue", "--no-web", "--ivr-app", DEMO_APP)
PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("interop-door")
    config, settings = write_settings(tmp, sip={"workers": 1})
    with run_node(config, settings, *NODE_ARGS) as running:
        yield running


def all_probed(node: Node, event: str) -> list[dict[str, object]]:
    path = node.settings.path(node.settings.data_dir) / PROBE_FILE
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r["event"] == event]


def probed(node: Node, event: str, call_id: str) -> list[dict[str, object]]:
    return [r for r in all_probed(node, event) if r["call_id"] == call_id]


def wait_probed(node: Node, event: str, call_id: str, count: int = 1, timeout_s: float = 10.0) -> list[object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(probed(node, event, call_id)) < count:
        time.sleep(0.05)
    return [r.get("digit", r["event"]) for r in probed(node, event, call_id)]


def loads(node: Node) -> dict[str, int]:
    states = asyncio.run(kamailio.worker_states(kamailio.KamailioPaths.for_settings(node.settings)))
    return {duid: load for duid, (_, load) in states.items()}


def wait_loads_zero(node: Node, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(loads(node).values()):
        time.sleep(0.2)
    assert not any(loads(node).values()), loads(node)


@contextmanager
def call(node: Node, *, late_offer: bool = False) -> Iterator[tuple[SipDialog, RtpSocket]]:
    rtp = RtpSocket()
    dialog = SipDialog(HOST, node.settings.sip.port)
    offer = sdp_body(HOST, rtp.port, PCMU_TE)
    dialog.answer_sdp = offer
    try:
        dialog.invite("" if late_offer else offer)
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 200, final and final.text
        assert dialog.route, "the front door did not record-route the call"
        dialog.ack(offer if late_offer else "")
        yield dialog, rtp
        dialog.request("BYE")
        bye = dialog.wait("BYE")
        assert bye is not None and bye.code == 200, bye and bye.text
    finally:
        if dialog.to_tag and not any(r.method == "BYE" for r in dialog.requests):
            dialog.request("BYE")
            dialog.wait("BYE", 2.0)
        dialog.close()
        rtp.close()
    wait_loads_zero(node)


def remote(dialog: SipDialog) -> tuple[str, int]:
    assert dialog.remote is not None
    return dialog.remote.host, dialog.remote.port


@pytest.mark.parametrize("codecs", [{9: "G722/8000"}, {18: "G729/8000", 101: "telephone-event/8000"}],
                         ids=["g722-only", "g729-only"])
def test_offer_without_our_codecs_gets_488_with_a_warning_at_the_door(node: Node, codecs: dict[int, str]) -> None:
    with SipDialog(HOST, node.settings.sip.port) as dialog:
        dialog.invite(sdp_body(HOST, 40000, codecs))
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 488, final and final.text
        dialog.ack_failure(final)
    warning = final.header("Warning") or ""
    assert warning.startswith("305 ") and "PCMU/8000 or PCMA/8000" in warning, final.text
    assert "reason=no_common_codec" in node.output()
    assert not any(loads(node).values())


def test_options_keepalive_lists_update_and_prack(node: Node) -> None:
    with RawSip(HOST, node.settings.sip.port) as raw:
        raw.send(options(HOST, node.settings.sip.port, raw.local_host, raw.local_port))
        [(code, _, message)] = raw.collect(1, 3.0).finals
    assert code == 200
    allow = message.decode().split("Allow: ", 1)[1].split("\r\n", 1)[0]
    assert {"INVITE", "UPDATE", "PRACK", "INFO", "OPTIONS"} <= {m.strip() for m in allow.split(",")}, allow


def test_info_dtmf_bodies_through_the_door(node: Node) -> None:
    with call(node) as (dialog, rtp):
        stream = RtpStream(pt=0)
        rtp.send(stream.audio(pcaps.silence_pcm(0.2)), remote(dialog))
        answers = []
        for body, kind in (("Signal=3\r\nDuration=160\r\n", "application/dtmf-relay"), ("7", "application/dtmf"),
                           ("7x", "application/dtmf"), ("<xml/>", "application/xml"), ("", "")):
            dialog.request("INFO", body, kind)
            response = dialog.wait("INFO")
            assert response is not None, kind
            answers.append(response.code)
        rtp.send(stream.audio(pcaps.silence_pcm(0.3)), remote(dialog))
        assert answers == [200, 200, 400, 415, 200], answers
        assert wait_probed(node, "dtmf", dialog.call_id, 2) == ["3", "7"]


def test_late_offer_hold_unhold_and_update_along_the_route_set(node: Node) -> None:
    with call(node, late_offer=True) as (dialog, rtp):
        stream = RtpStream(pt=0)
        for version, direction, expect in ((2, "sendonly", "recvonly"), (3, "sendrecv", "sendrecv")):
            ok = dialog.reinvite_accepted(sdp_body(HOST, rtp.port, PCMU_TE, direction=direction, version=version))
            assert ok is not None and ok.code == 200, ok and ok.text
            dialog.ack()
            assert dialog.remote is not None and dialog.remote.direction == expect, ok.text
        dialog.request("UPDATE", extra="Supported: timer\r\nSession-Expires: 1800;refresher=uac\r\n")
        update = dialog.wait("UPDATE")
        assert update is not None and update.code == 200, update and update.text
        before = rtp.received
        rtp.send(stream.audio(pcaps.silence_pcm(0.2)) + stream.dtmf("5", 101, 120)
                 + stream.audio(pcaps.silence_pcm(0.2)), remote(dialog))
        assert wait_probed(node, "dtmf", dialog.call_id) == ["5"]
        assert rtp.received > before, "no audio from the portal after the unhold"


def test_cancel_right_after_the_invite_frees_the_slot(node: Node) -> None:
    """A CANCEL sent with the INVITE races it through Kamailio's receiver processes (one that finds no transaction
    yet drops it; the caller's retransmission then finds it). Either outcome of the race is correct SIP: 487, or
    the 2xx won and the caller ends the call with ACK + BYE (RFC 3261 9.1); the slot is free after both."""
    outcomes = []
    for _ in range(4):
        with SipDialog(HOST, node.settings.sip.port) as dialog:
            dialog.invite(sdp_body(HOST, 40000, PCMU_TE))
            dialog.cancel()
            cancelled = dialog.wait("CANCEL", retransmit=dialog.cancel_text)
            final = dialog.wait_invite_final()
            assert final is not None and final.code in (200, 487), final and final.text
            if final.code == 487:
                assert cancelled is not None and cancelled.code == 200, cancelled and cancelled.text
            outcomes.append(final.code)
            if final.code == 487:
                dialog.ack_failure(final)
            else:
                dialog.ack()
                dialog.request("BYE")
                bye = dialog.wait("BYE")
                assert bye is not None and bye.code == 200, bye and bye.text
    wait_loads_zero(node)
    assert 487 in outcomes or "event=call_dispatched" in node.output(), outcomes
    with call(node):                              # and the worker takes the next call
        pass


def test_a_call_with_a_large_invite_goes_to_the_worker_over_tcp(node: Node, tmp_path: Path) -> None:
    """Above udp_mtu (1,300 bytes) the door relays to the worker over TCP (RFC 3261 18.1.1): a 2.7 KB INVITE from a
    carrier with many headers is answered by the worker and the call works."""
    rtp = RtpSocket()
    try:
        with SipDialog(HOST, node.settings.sip.port) as dialog:
            offer = sdp_body(HOST, rtp.port, PCMU_TE)
            dialog.answer_sdp = offer
            dialog.invite(offer, extra="".join(f"X-Carrier-Info-{i}: {'v' * 90}\r\n" for i in range(20)))
            final = dialog.wait_invite_final()
            assert final is not None and final.code == 200, final and final.text
            dialog.ack()
            rtp.send(RtpStream(pt=0).dtmf("8", 101, 120), remote(dialog))
            assert wait_probed(node, "dtmf", dialog.call_id) == ["8"]
            dialog.request("BYE")
            assert dialog.wait("BYE") is not None
    finally:
        rtp.close()
    wait_loads_zero(node)


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_caller_holds_resumes_keys_and_refreshes(node: Node, tmp_path: Path, transport: str) -> None:
    """The same as a sipp scenario (testkit/scenarios/uac_hold.xml), the shape an outside SIP test suite plays;
    over TCP too (a trunk on TCP: the door's Record-Route and the worker's BYE path must follow)."""
    pcap = pcaps.write_dtmf_pcap(tmp_path / "dtmf42.pcap", "42")
    mark = len(all_probed(node, "dtmf"))                 # this module's calls run one at a time
    script = sippkit.render(sippkit.SCENARIOS / "uac_hold.xml", tmp_path,
                            {"DTMF_PCAP": str(pcap), "DTMF_MS": "1200"}, test="hold")
    proc = sippkit.run_call(script, f"{HOST}:{node.settings.sip.port}", cwd=tmp_path, transport=transport,
                            timeout_s=30)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    wait_loads_zero(node)
    assert node.output().count("call held") >= 1 and "call resumed" in node.output()
    assert [r["digit"] for r in all_probed(node, "dtmf")[mark:]] == ["4", "2"], all_probed(node, "dtmf")[-4:]
