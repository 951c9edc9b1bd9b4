"""Call-detail records and dashboard figures from real calls (issue 15's real-call test): sipp callers over real
SIP to the portal (pjsua2 edge + engine + case recorder on SQLite, the DTMF menu): one keys 3 and a folio (status)
then 0 and is transferred by REFER to a sipp agent that accepts; one keys 1 (tourism) and hangs up while the
portal speaks (abandoned). Each appears in the CDR with its disposition, keypad turns, intents, latency and
transfer, and the period's dashboard moves by exactly those calls."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from case_bridge.call_records import CallQuery
from case_bridge.service import CaseService
from tests.escalation.portal import Portal
from tests.escalation.scenario_parts import refer_block
from tests.escalation.sippkit import dtmf_timeline, start_sipp
from tests.escalation.test_sip_escalation import (  # noqa: F401 - the fixtures are that module's
    agent_port,
    caller_subs,
    folio,
    keys_pcap,
    make_portal,
    service,
    stop_later,
    tts_dir,
)

CALLER_HANGS_UP = """  <pause milliseconds="@HANGUP_MS@"/>
  <send retrans="500">
    <![CDATA[

      BYE sip:veratur@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Prueba" <sip:2281234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:veratur@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"""


async def test_real_calls_land_in_the_cdr_and_the_dashboard(
        tmp_path: Path, tts_dir: Path, service: CaseService, folio: str, agent_port: int,  # noqa: F811
        stop_later: list[Portal]) -> None:  # noqa: F811 - the fixtures imported above
    period = (datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC) + timedelta(hours=2))
    before = service.dashboard(*period)
    portal = await make_portal(tmp_path, tts_dir, service, agent_port)
    stop_later.append(portal)

    # status by folio, then the agent: REFER accepted (200 sipfrag), the portal hangs up
    pcap = keys_pcap(tmp_path, folio)
    caller = await start_sipp("uac_caller", tmp_path, caller_subs(pcap[0], refer_block(folio, "200 OK")),
                              target=f"127.0.0.1:{portal.port}")
    code, out = await caller.wait(90)
    assert code == 0, out
    await portal.wait_calls_done()
    transferred = caller.logged_value("CALL_ID")
    assert transferred

    # tourism, then the caller hangs up while the portal is still speaking
    tourism, _, _ = dtmf_timeline(tmp_path / "tourism.pcap", [(1.0, "1")])
    subs = caller_subs(tourism, "", end=CALLER_HANGS_UP.replace("@HANGUP_MS@", "5000"))
    hung = await start_sipp("uac_caller", tmp_path, subs, target=f"127.0.0.1:{portal.port}")
    code, out = await hung.wait(60)
    assert code == 0, out
    await portal.wait_calls_done()
    abandoned = hung.logged_value("CALL_ID")
    assert abandoned and abandoned != transferred

    t = service.call_detail(transferred)
    assert t is not None
    assert (t.disposition, t.folio, t.transfer_target) == ("transferred", folio, f"sip:agentes@127.0.0.1:{agent_port}")
    assert t.caller == "******4567" and t.worker == "esc-w0"
    assert t.dtmf_turns >= 3 and t.speech_turns == 0 and t.turns >= 3          # 3, the folio, 0
    assert "tramite_status" in t.intents and "agent" in t.intents
    assert t.latency_p50_ms is not None and 0 < t.latency_p50_ms <= (t.latency_max_ms or 0)
    assert t.ended_at is not None and t.duration_s is not None and t.duration_s > 5

    a = service.call_detail(abandoned)
    assert a is not None
    assert (a.disposition, a.folio, a.transfer_target) == ("abandoned", None, None)
    assert a.dtmf_turns == 1 and "tourism" in a.intents
    assert a.duration_s is not None and 4 < a.duration_s < 30

    # the dashboard of the period moved by exactly these two calls
    after = service.dashboard(*period)
    assert after.ended == before.ended + 2
    for disposition in ("transferred", "abandoned"):
        assert after.dispositions.get(disposition, 0) == before.dispositions.get(disposition, 0) + 1
    intents_before, intents_after = dict(before.top_intents), dict(after.top_intents)
    for intent in ("tourism", "agent"):
        assert intents_after.get(intent, 0) >= intents_before.get(intent, 0) + 1
    assert after.latency_by_day and after.peak_concurrent >= 1
    # and the call search finds the transferred call by its folio
    seen = service.search_calls(CallQuery(since=period[0], until=period[1], folio=folio))
    assert [c.call_id for c in seen.calls] == [transferred]
