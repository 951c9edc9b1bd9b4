"""Escalation over real SIP: the portal (pjsua2 edge + engine + case recorder on SQLite) escalates a call whose
caller (sipp) keyed a folio; the REFER (or, in bridge mode, the agent's INVITE) reaches a real sipp peer that
checks X-Veratur-Case and the RFC 7433 User-to-User header; 486, 404 and no answer take the callback fallback.
"""
from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from case_bridge.escalation import EscalationDesk
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from ivr.call.escalation import decode_uui
from testkit import pcaps
from tests.case_bridge.conftest import TEST_TRAMITES
from tests.escalation.conftest import REDIS_URL, unique
from tests.escalation.portal import Portal, portal_settings
from tests.escalation.scenario_parts import ANSWER_THEN_GET_BYE, NO_ANSWER, PORTAL_BYE, final, play, refer_block
from tests.escalation.sippkit import dtmf_timeline, start_sipp
from tests.sip.harness import VERATUR, free_udp_port

pytestmark = [pytest.mark.timeout(240)]

CALLER_DIGITS = "2281234567"


@pytest.fixture
def service(esc_sqlite_database: str) -> Iterator[CaseService]:
    svc = CaseService.from_url(esc_sqlite_database, redis_url=REDIS_URL, ratelimit_prefix=unique("esc-sip-"))
    svc.upsert_tramites(TEST_TRAMITES)
    yield svc
    svc.close()


@pytest.fixture
def folio(service: CaseService) -> str:
    return service.open_case("licencia_conducir", "web", citizen=CitizenInfo("Rosa Hernández",
                                                                            phone=CALLER_DIGITS)).case.folio


@pytest.fixture(scope="module")
def tts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tts")   # prompts rendered once for the module's portals


@pytest.fixture
def agent_port() -> int:
    return free_udp_port()


def keys_pcap(tmp: Path, folio: str) -> tuple[Path, int, int]:
    """Menu 3 (status), the folio and #, then 0 (agent): each key after the previous prompt has begun."""
    return dtmf_timeline(tmp / "keys.pcap", [(1.0, "3"), (3.5, folio + "#"), (9.0, "0")])


def answer_pcap(tmp: Path, after: tuple[Path, int, int], digit: str = "1") -> Path:
    _, seq, ts = after
    path, _, _ = dtmf_timeline(tmp / f"answer-{digit}.pcap", [(0.0, digit)], first_seq=seq, first_ts=ts)
    return path


async def make_portal(tmp: Path, tts: Path, service: CaseService, agent_port: int, **kw: object) -> Portal:
    settings = portal_settings(tmp, str(service.engine.url.render_as_string(hide_password=False)),
                               agent_uri=f"sip:agentes@127.0.0.1:{agent_port}", **kw)  # type: ignore[arg-type]
    settings = settings.model_copy(update={"tts": settings.tts.model_copy(update={"cache_dir": tts})})
    return await Portal.start(settings, service)


@pytest.fixture
async def stop_later() -> AsyncIterator[list[Portal]]:
    portals: list[Portal] = []
    yield portals
    for p in portals:
        await p.stop()


def caller_subs(pcap: Path, middle: str, end: str = PORTAL_BYE, bye_timeout_ms: int = 40000) -> dict[str, str]:
    return {"KEYS_PCAP": str(pcap), "MIDDLE": middle, "END": end.replace("@BYE_TIMEOUT_MS@", str(bye_timeout_ms)),
            "BYE_TIMEOUT_MS": str(bye_timeout_ms),
            "REFERENCES": '<Reference variables="case,uui,rt"/>' if 'request="REFER"' in middle else ""}


def escalation_of(desk: EscalationDesk, service: CaseService, call_id: str) -> dict[str, object]:
    from case_bridge.models import CallRecord, Escalation
    with service.uow.session() as s:
        esc = s.query(Escalation).join(CallRecord, Escalation.call_id == CallRecord.id) \
            .filter(CallRecord.sip_call_id == call_id).one()
        return {"id": esc.id, "sip_status": esc.sip_status, "callback": esc.callback_requested,
                "phone": esc.callback_phone, "mode": esc.mode, "reason": esc.reason, "target": esc.target}


# ---- REFER ---------------------------------------------------------------------------------------------------------
async def test_refer_carries_folio_and_uui_and_ends_the_leg(tmp_path: Path, tts_dir: Path, service: CaseService,
                                                           folio: str, agent_port: int,
                                                           stop_later: list[Portal]) -> None:
    portal = await make_portal(tmp_path, tts_dir, service, agent_port)
    stop_later.append(portal)
    pcap = keys_pcap(tmp_path, folio)
    caller = await start_sipp("uac_caller", tmp_path, caller_subs(pcap[0], refer_block(folio, "200 OK")),
                              target=f"127.0.0.1:{portal.port}")
    code, out = await caller.wait(90)
    assert code == 0, out                                   # the REFER had X-Veratur-Case: <folio>; BYE came after
    await portal.wait_calls_done()
    call_id = caller.logged_value("CALL_ID")
    assert call_id
    uui = decode_uui(f"{caller.logged_value('UUI')};encoding=hex;purpose=veratur-case")
    assert uui == {"case": folio, "call": call_id, "why": "caller_request"}
    refer_to = caller.logged_value("REFER_TO") or ""
    assert refer_to.startswith(f"<sip:agentes@127.0.0.1:{agent_port}?X-Veratur-Case={folio}&User-to-User=")
    embedded = unquote(refer_to.split("User-to-User=", 1)[1].rstrip(">"))
    assert decode_uui(embedded)["case"] == folio             # the transferee's INVITE will carry it too
    record = service.get_call(call_id)
    assert record is not None and record.disposition == "transferred" and record.folio == folio
    assert record.transfer_target == f"sip:agentes@127.0.0.1:{agent_port}" and record.ended_at is not None
    esc = escalation_of(EscalationDesk(service), service, call_id)
    assert esc["sip_status"] == 200 and esc["reason"] == "caller_request" and esc["callback"] is False
    said = [t.text for t in service.transcript(call_id)]
    assert "[DTMF 0]" in said and any("Le comunico con un agente" in t for t in said)


@pytest.mark.parametrize("sipfrag", ["486 Busy Here", "404 Not Found", None], ids=["486", "404", "timeout"])
async def test_refer_failure_offers_callback_and_keeps_folio(tmp_path: Path, tts_dir: Path, service: CaseService,
                                                            folio: str, agent_port: int, stop_later: list[Portal],
                                                            sipfrag: str | None) -> None:
    portal = await make_portal(tmp_path, tts_dir, service, agent_port, transfer_timeout_s=3.0)
    stop_later.append(portal)
    pcap = keys_pcap(tmp_path, folio)
    wait_ms = 2500 if sipfrag else 3000 + 2500               # the offer starts after the NOTIFY or the timeout
    middle = refer_block(folio, sipfrag) + play(answer_pcap(tmp_path, pcap), wait_ms)
    caller = await start_sipp("uac_caller", tmp_path, caller_subs(pcap[0], middle), target=f"127.0.0.1:{portal.port}")
    code, out = await caller.wait(90)
    assert code == 0, out
    await portal.wait_calls_done()
    call_id = caller.logged_value("CALL_ID")
    assert call_id
    record = service.get_call(call_id)
    assert record is not None and record.disposition == "transfer_failed" and record.folio == folio
    esc = escalation_of(EscalationDesk(service), service, call_id)
    assert esc["sip_status"] == (int(sipfrag.split()[0]) if sipfrag else 408)
    assert esc["callback"] is True and esc["phone"] == CALLER_DIGITS
    turns = service.transcript(call_id)
    texts = [t.text for t in turns]
    offer = next(i for i, t in enumerate(texts) if "devuelva la llamada" in t)
    assert " ".join(folio) in texts[offer]                   # the folio is read back with the offer
    assert texts[offer + 1] == "[DTMF 1]" and turns[offer + 1].speaker == "caller"
    assert "Un agente le llamará" in texts[-1]
    item = next(i for i in EscalationDesk(service).queue() if i.call_id == call_id)
    assert item.state == "callback" and item.folio == folio


async def test_transferee_invites_the_agent_with_the_case_headers(tmp_path: Path, tts_dir: Path,
                                                                 service: CaseService, folio: str, agent_port: int,
                                                                 stop_later: list[Portal]) -> None:
    """pjsua2 caller (`veratur call`) follows the REFER: the agent's INVITE carries the Refer-To's headers."""
    portal = await make_portal(tmp_path, tts_dir, service, agent_port)
    stop_later.append(portal)
    talk = pcaps.write_pcmu_pcap(tmp_path / "talk.pcap", pcaps.tone_pcm(440, 1.0))
    agent = await start_sipp("uas_agent", tmp_path, {"FOLIO": folio, "ANSWER": ANSWER_THEN_GET_BYE,
                                                     "INVITE_TIMEOUT_MS": "100000", "BYE_TIMEOUT_MS": "60000",
                                                     "TALK_PCAP": str(talk)}, port=agent_port, timeout_s=110)
    proc = await asyncio.create_subprocess_exec(
        str(VERATUR), "call", portal.uri, "--dtmf", "3", "--dtmf", folio + "#", "--dtmf", "0", "--wait", "3",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VERATUR__DATA_DIR": str(tmp_path)})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    code, log = await agent.wait(30)
    assert code == 0, log                                    # INVITE had X-Veratur-Case: <folio> and our UUI
    uui = decode_uui(f"{agent.logged_value('UUI')};encoding=hex;purpose=veratur-case")
    await portal.wait_calls_done()
    assert uui["case"] == folio and uui["why"] == "caller_request"
    record = service.get_call(uui["call"])
    assert record is not None and record.disposition == "transferred" and record.folio == folio


# ---- bridge --------------------------------------------------------------------------------------------------------
async def test_bridge_calls_agent_with_headers_and_ties_the_calls(tmp_path: Path, tts_dir: Path,
                                                                 service: CaseService, folio: str, agent_port: int,
                                                                 stop_later: list[Portal]) -> None:
    portal = await make_portal(tmp_path, tts_dir, service, agent_port, mode="bridge")
    stop_later.append(portal)
    talk = pcaps.write_pcmu_pcap(tmp_path / "talk.pcap", pcaps.tone_pcm(440, 3.0))
    agent = await start_sipp("uas_agent", tmp_path, {"FOLIO": folio, "ANSWER": ANSWER_THEN_GET_BYE,
                                                     "INVITE_TIMEOUT_MS": "60000", "BYE_TIMEOUT_MS": "60000",
                                                     "TALK_PCAP": str(talk)}, port=agent_port, timeout_s=90)
    pcap = keys_pcap(tmp_path, folio)
    hang_up = """  <pause milliseconds="18000"/>
  <send retrans="500">
    <![CDATA[

      BYE sip:veratur@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Prueba" <sip:2281234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:veratur@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""
    caller = await start_sipp("uac_caller", tmp_path, caller_subs(pcap[0], "", end=hang_up),
                              target=f"127.0.0.1:{portal.port}")
    code, out = await caller.wait(90)
    assert code == 0, out
    code, log = await agent.wait(30)
    assert code == 0, log                    # INVITE with the headers, answered, then BYE when the caller left
    await portal.wait_calls_done()
    call_id = caller.logged_value("CALL_ID")
    uui = decode_uui(f"{agent.logged_value('UUI')};encoding=hex;purpose=veratur-case")
    assert uui == {"case": folio, "call": call_id, "why": "caller_request"}
    record = service.get_call(call_id or "")
    assert record is not None and record.disposition == "transferred"
    assert record.transfer_target == f"sip:agentes@127.0.0.1:{agent_port}"
    esc = escalation_of(EscalationDesk(service), service, call_id or "")
    assert esc["mode"] == "bridge" and esc["sip_status"] == 200
    state = await portal.edge.snapshot()
    assert state.calls == 0 and state.legs == 0               # both calls gone, nothing left in the bridge


@pytest.mark.parametrize("answer", ["486 Busy Here", "404 Not Found", "no-answer"])
async def test_bridge_failure_takes_the_fallback(tmp_path: Path, tts_dir: Path, service: CaseService, folio: str,
                                                 agent_port: int, stop_later: list[Portal], answer: str) -> None:
    portal = await make_portal(tmp_path, tts_dir, service, agent_port, mode="bridge", transfer_timeout_s=3.0)
    stop_later.append(portal)
    agent = await start_sipp("uas_agent", tmp_path, {
        "FOLIO": folio, "ANSWER": NO_ANSWER if answer == "no-answer" else final(answer),
        "INVITE_TIMEOUT_MS": "60000", "BYE_TIMEOUT_MS": "30000"}, port=agent_port, timeout_s=90)
    pcap = keys_pcap(tmp_path, folio)
    wait_ms = 17000 if answer == "no-answer" else 14000      # keys end ~10 s, hand-off phrase, then the offer
    caller = await start_sipp("uac_caller", tmp_path,
                              caller_subs(pcap[0], play(answer_pcap(tmp_path, pcap, "2"), wait_ms)),
                              target=f"127.0.0.1:{portal.port}")
    code, out = await caller.wait(90)
    assert code == 0, out
    code, log = await agent.wait(30)
    assert code == 0, log
    await portal.wait_calls_done()
    call_id = caller.logged_value("CALL_ID") or ""
    record = service.get_call(call_id)
    assert record is not None and record.disposition == "transfer_failed"
    esc = escalation_of(EscalationDesk(service), service, call_id)
    assert esc["sip_status"] == (408 if answer == "no-answer" else int(answer.split()[0]))
    assert esc["callback"] is False and esc["phone"] is None          # the caller keyed 2: no callback
    texts = [t.text for t in service.transcript(call_id)]
    assert "[DTMF 2]" in texts and "llame más tarde" in texts[-1]


# ---- bad input -----------------------------------------------------------------------------------------------------
async def test_forbidden_queue_sends_no_sip(tmp_path: Path, tts_dir: Path, service: CaseService, folio: str,
                                            agent_port: int, stop_later: list[Portal]) -> None:
    """A queue URI outside allowed_targets (a bad edit that skipped validation): no REFER, the fallback instead."""
    portal = await make_portal(tmp_path, tts_dir, service, agent_port,
                               allowed=[f"sip:agentes@127.0.0.1:{agent_port + 1}"])
    stop_later.append(portal)
    pcap = keys_pcap(tmp_path, folio)
    caller = await start_sipp("uac_caller", tmp_path, caller_subs(pcap[0], ""), target=f"127.0.0.1:{portal.port}")
    code, out = await caller.wait(90)
    assert code == 0, out                          # the next message after the keys was BYE: no REFER was sent
    await portal.wait_calls_done()
    call_id = caller.logged_value("CALL_ID") or ""
    record = service.get_call(call_id)
    assert record is not None and record.disposition == "transfer_failed"
    esc = escalation_of(EscalationDesk(service), service, call_id)
    assert esc["sip_status"] == 403 and esc["target"] == ""     # queued anyway, so a callback could reach an agent


async def test_caller_cannot_refer_the_portal_anywhere(tmp_path: Path, tts_dir: Path, service: CaseService,
                                                      agent_port: int, stop_later: list[Portal]) -> None:
    """A REFER from the caller's side (the portal as transferee) is refused: the node never calls its target."""
    portal = await make_portal(tmp_path, tts_dir, service, agent_port)
    stop_later.append(portal)
    evil = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    evil.bind(("127.0.0.1", 0))
    evil.setblocking(False)
    try:
        evil_uri = f"sip:9001@127.0.0.1:{evil.getsockname()[1]}"
        caller = await start_sipp("uac_refers_portal", tmp_path, {"EVIL_URI": evil_uri},
                                  target=f"127.0.0.1:{portal.port}")
        code, out = await caller.wait(60)
        assert code == 0, out                                   # the REFER got 403
        await asyncio.sleep(2.0)
        with pytest.raises(BlockingIOError):
            evil.recv(4096)                                     # and nothing was sent to its target
    finally:
        evil.close()
    await portal.wait_calls_done()
