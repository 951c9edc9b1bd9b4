"""One source address cannot hold every call slot (issue 13, found by a sipvicious scan): `svmap -m INVITE` sends
INVITEs and never ACKs the 200, and a worker keeps such a call for the 32 s it waits for the ACK (RFC 3261: no BYE
before it); 8 of them from one address held every slot of a 2-worker node and every other caller got 503.
`sip.max_calls_per_source` caps what one address holds at the front door, counted from the INVITE. Real Kamailio in
front of real pjsua2 workers (`veratur up` with the SIP-only demo handler); a node of its own, since its calls are
answered and held."""
from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator

import pytest

from testkit.demo_handler import DEMO_APP
from testkit.sipraw import RawSip
from tests.chaos.test_front_door import _counts_after, _Reader, padded_invite
from tests.node.conftest import HOST, write_settings
from tests.node.node_runner import run_node
from veratur import kamailio

pytestmark = pytest.mark.sip

CAP = 4


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("source-cap")
    config, settings = write_settings(tmp, sip={"workers": 2, "new_calls_per_source_per_second": 10,
                                                "max_calls_per_source": CAP})
    with run_node(config, settings, "--no-dialogue", "--no-web", "--ivr-app", DEMO_APP) as running:
        yield running


def _end_answered(raw: RawSip, answer: bytes, port: int) -> None:
    """ACK and BYE the call `answer` (a 200 to our INVITE) answered, through the route set it carries."""
    head = answer.split(b"\r\n\r\n", 1)[0].decode()

    def header(name: str) -> str:
        found = re.search(rf"^{name}: *(.+)$", head, re.M | re.I)
        assert found, name
        return found.group(1).strip()

    contact = re.sub(r"^<|>.*$", "", header("Contact"))
    routes = re.findall(r"^Record-Route: *(.+)$", head, re.M | re.I)
    route = "".join(f"Route: {r.strip()}\r\n" for r in reversed(routes))
    for method, cseq in (("ACK", 1), ("BYE", 2)):
        via = f"SIP/2.0/UDP {raw.host}:{raw.port};branch=z9hG4bK-{secrets.token_hex(6)};rport"
        raw.send((f"{method} {contact} SIP/2.0\r\nVia: {via}\r\n{route}From: {header('From')}\r\n"
                  f"To: {header('To')}\r\nCall-ID: {header('Call-ID')}\r\nCSeq: {cseq} {method}\r\n"
                  f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (HOST, port))


def _held_by(address: str, settings) -> int:  # type: ignore[no-untyped-def]
    """The calls Kamailio counts for `address` in the per-source profile."""
    text = asyncio.run(kamailio.kamcmd(kamailio.KamailioPaths.for_settings(settings), "dlg.profile_get_size",
                                       kamailio.SOURCE_PROFILE, address))
    found = re.search(r"(\d+)\s*$", text)      # kamcmd prints the bare number for a profile with a value
    return int(found.group(1)) if found else 0


def test_one_source_cannot_hold_every_call_slot_with_answers_it_never_acks(node) -> None:  # type: ignore[no-untyped-def]
    """4 INVITEs from one address answered and never ACKed: the 5th from that address gets 503 + Retry-After at the
    front door, a caller from another address still gets in; once the calls end, nothing stays counted."""
    port = node.settings.sip.port
    paths = kamailio.KamailioPaths.for_settings(node.settings)
    before = asyncio.run(kamailio.front_door_counts(paths))
    answered: list[tuple[RawSip, bytes]] = []
    with RawSip("127.0.0.6") as scanner, RawSip("127.0.0.6") as again, RawSip("127.0.0.7") as caller:
        try:
            reader = _Reader(scanner)
            for _ in range(CAP):
                scanner.send(padded_invite(port, scanner, 10), (HOST, port))
                time.sleep(0.15)                 # under the per-source new-call rate
            held = reader.wait_for(CAP, 30.0)
            answered += [(scanner, final[2]) for final in held.values() if final[0] == 200]
            assert sorted(code for code, _, _ in held.values()) == [200] * CAP
            again.send(padded_invite(port, again, 10), (HOST, port))    # same address, a socket without 200s
            fifth = again.collect(1, 10.0).finals
            assert [(code, reason) for code, reason, _ in fifth] == [(503, "Too Many Calls From This Address")]
            assert b"Retry-After: " in fifth[0][2]
            caller.send(padded_invite(port, caller, 10), (HOST, port))
            other = caller.collect(1, 30.0).finals
            answered += [(caller, final[2]) for final in other if final[0] == 200]
            assert [code for code, _, _ in other] == [200]
            counted = _counts_after(node.settings, before, CAP + 2, 10.0)
            print(f"\nnever-ACKed INVITEs from one address: {CAP} answered, the next refused; Kamailio counted "
                  f"{counted}")
            assert counted["source_calls"] == 1
            assert _held_by("127.0.0.6", node.settings) == CAP      # the profile the cap reads
        finally:
            for raw, answer in answered:
                _end_answered(raw, answer, port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _held_by("127.0.0.6", node.settings) + _held_by("127.0.0.7", node.settings):
        time.sleep(0.2)
    assert _held_by("127.0.0.6", node.settings) == 0 and _held_by("127.0.0.7", node.settings) == 0


def test_a_flooding_source_is_throttled_without_hurting_other_sources(node) -> None:  # type: ignore[no-untyped-def]
    """127.0.0.3 sends new INVITEs at 100/s for 2 s: beyond its per-source share they get 503 + Retry-After before
    any worker is involved; meanwhile every INVITE from 127.0.0.4 (one each 0.25 s) reaches a worker. SRTP-only
    offers: a worker answers 488 and holds no slot, so the flood's share is not what fills the node. (On this
    module's node: the front-door module's node has a worker killed, whose dialogs' slots stay counted.) What was
    refused is what Kamailio counted (statistics module), not what a client managed to read back."""
    port = node.settings.sip.port
    per_source = node.settings.sip.new_calls_per_source_per_second
    paths = kamailio.KamailioPaths.for_settings(node.settings)
    before = asyncio.run(kamailio.front_door_counts(paths))
    mark = len(node.stderr)
    with RawSip("127.0.0.3") as flood, RawSip("127.0.0.4") as other:
        flood_reader, other_reader = _Reader(flood), _Reader(other)
        started = time.monotonic()
        sent = 0
        for index in range(200):
            flood.send(padded_invite(port, flood, 10, proto="RTP/SAVP"), (HOST, port))
            sent += 1
            if index % 25 == 12:
                other.send(padded_invite(port, other, 10, proto="RTP/SAVP"), (HOST, port))
            time.sleep(max(started + (index + 1) / 100 - time.monotonic(), 0))
        flood_s = time.monotonic() - started
        counted = _counts_after(node.settings, before, sent + 8, 15.0)
        flooded = flood_reader.wait_for(sent, 10.0)
        others = other_reader.wait_for(8, 10.0)
    throttled = [f for f in flooded.values() if f[0] == 503 and "From This Address" in f[1]]
    other_codes = sorted(code for code, _, _ in others.values())
    dispatched = sum("event=call_dispatched" in line and "src=127.0.0.3" in line for line in node.stderr[mark:])
    print(f"\nflood: {sent} INVITEs in {flood_s:.1f} s from one source (share {per_source}/s); Kamailio counted "
          f"{counted}; {dispatched} of the flood dispatched (log); answers read: {len(throttled)} 'From This "
          f"Address' 503 of {len(flooded)}; other source: {other_codes}")
    # The flood touched at most ceil(flood_s) + 1 one-second windows: at most that many shares were dispatched,
    # and the rest of the flood was refused by its share (none by the node's rate; the odd one may meet a full node).
    windows = int(flood_s) + 2
    assert dispatched <= windows * per_source
    assert counted["source"] >= sent - windows * per_source
    assert counted["node"] == 0
    assert sum(counted.values()) == sent + 8          # Kamailio decided on every INVITE sent
    assert counted["dispatched"] == dispatched + 8
    # what was read back is the answer Kamailio counted: a 503 with Retry-After
    assert throttled and all(b"Retry-After: " in f[2] for f in throttled)
    assert len(throttled) <= counted["source"] + counted["source_calls"]      # both 503s say 'From This Address'
    assert other_codes == [488] * 8
