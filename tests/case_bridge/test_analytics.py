"""Dashboard aggregates and call-detail search on a seeded set of calls with known answers (SQLite and PostgreSQL)."""
from __future__ import annotations

import itertools
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest

from case_bridge.call_records import CallQuery
from case_bridge.errors import InvalidInput
from case_bridge.service import CaseService
from case_bridge.views import LOCAL_TZ
from ivr.call.leg import CallInfo
from ivr.call.recorder import CaseRecorder
from ivr.call.stats import CallStats
from testkit.call_records import NOT_UNDERSTOOD, STEP_FOLIO, STEP_TRAMITE, KnownCalls, seed_known_calls

_DAYS = itertools.count()


@pytest.fixture
def known(svc: CaseService) -> KnownCalls:
    # a day of its own per test (fortnights apart: the seed has a call a week before): the database is shared
    return seed_known_calls(svc, date(2024, 1, 1) + timedelta(days=14 * next(_DAYS)))


@pytest.fixture
def known_cb(svc: CaseService) -> KnownCalls:
    # the same day with the node's callbacks mixed in: every inbound figure must read as it does without them
    return seed_known_calls(svc, date(2024, 1, 1) + timedelta(days=14 * next(_DAYS)), callbacks=True)


def test_dashboard_figures(svc: CaseService, known_cb: KnownCalls) -> None:
    known = known_cb
    d = svc.dashboard(known.since, known.until)
    assert d.calls == d.ended == 4
    assert d.dispositions == {"completed": 2, "transferred": 1, "abandoned": 1}
    assert (d.containment, d.transfer_rate, d.abandonment) == (0.5, 0.25, 0.25)
    assert d.aht_s == pytest.approx(225.0)
    assert d.per_day == [(known.since.astimezone(LOCAL_TZ).date().isoformat(), 4)]
    assert dict(d.per_hour)[9] == 3 and dict(d.per_hour)[10] == 1 and sum(n for _, n in d.per_hour) == 4
    assert d.peak_concurrent == 3
    assert d.peak_at is not None and d.peak_at == known.since + timedelta(hours=9, minutes=3)
    assert d.transfer_reasons == [("no_match", 1)]
    assert dict(d.top_intents) == {"consultar_estado": 1, "nlu_fallback": 1, "turismo": 1}
    assert "fuera_de_periodo" not in dict(d.top_intents)          # the call a week before is outside
    assert d.top_cities == [("xalapa", 2)]
    assert d.top_tramites == [("acta_nacimiento", 1)]


def test_where_callers_get_lost(svc: CaseService, known_cb: KnownCalls) -> None:
    d = svc.dashboard(known_cb.since, known_cb.until)
    steps = {s.step: s for s in d.lost_steps}
    assert (steps[STEP_TRAMITE].asked, steps[STEP_TRAMITE].no_match, steps[STEP_TRAMITE].no_input) == (3, 1, 0)
    assert (steps[STEP_FOLIO].asked, steps[STEP_FOLIO].no_input) == (2, 1)
    assert d.lost_steps[0].step == STEP_FOLIO and d.lost_steps[0].lost_rate == 0.5   # worst step first
    phrases = dict(d.not_understood)
    assert "2281234567" not in " ".join(phrases)                   # masked
    assert phrases[NOT_UNDERSTOOD.replace("2281234567", "******4567")] == 1


def test_cross_channel_and_distributions(svc: CaseService, known_cb: KnownCalls) -> None:
    known = known_cb
    d = svc.dashboard(known.since, known.until)
    assert d.cross_channel.phone_cases == 1          # the web case that only got a callback is not a phone case
    assert d.cross_channel.continued == {"web": 1}
    assert d.cross_channel.median_hours["web"] == pytest.approx(2.0, abs=0.01)
    assert d.latency_by_day == [(known.since.astimezone(LOCAL_TZ).date().isoformat(), 450, 650)]          # bins of 50 ms: 380, 420, 610
    bins = dict(d.confidence_bins)
    assert (bins[0.3], bins[0.5], bins[0.9], sum(bins.values())) == (1, 1, 2, 4)


def test_outbound_calls_are_their_own_section(svc: CaseService, known_cb: KnownCalls) -> None:
    known = known_cb
    d = svc.dashboard(known.since, known.until)
    assert d.outbound.outcomes == {o: 1 for o in ("answered", "busy", "no_answer", "silent", "failed", "opt_out")}
    assert (d.outbound.attempts, d.outbound.calls, d.outbound.in_progress) == (6, 3, 0)
    assert d.outbound.aht_s == pytest.approx(80.0)
    assert d.calls == 4 and d.peak_concurrent == 3
    # one callback still ringing through its conversation: in progress in its own section, not in the inbound one
    svc.link_call(f"open-{uuid.uuid4().hex[:8]}@callback.test", "2280000000", called="2285512345", node="nodo1",
                  started_at=known.since + timedelta(hours=16), direction="outbound")
    d = svc.dashboard(known.since, known.until)
    assert (d.outbound.calls, d.outbound.in_progress, d.outbound.attempts) == (4, 1, 6)
    assert d.calls == 4 and "in_progress" not in d.dispositions
    period = CallQuery(since=known.since, until=known.until)
    assert svc.search_calls(period).total == 8
    out = svc.search_calls(CallQuery(since=known.since, until=known.until, direction="outbound"))
    assert out.total == 4 and {c.direction for c in out.calls} == {"outbound"}
    assert {known.ids[k] for k in "EFG"} <= {c.call_id for c in out.calls}
    assert svc.search_calls(CallQuery(since=known.since, until=known.until, direction="inbound")).total == 4
    with pytest.raises(InvalidInput):
        svc.search_calls(CallQuery(direction="sideways"))
    with pytest.raises(InvalidInput):
        svc.link_call(f"bad-{uuid.uuid4().hex[:8]}@x", "2280000000", direction="sideways")


def test_search_filters_paging_and_detail(svc: CaseService, known: KnownCalls) -> None:
    period = CallQuery(since=known.since, until=known.until)
    page = svc.search_calls(period, per_page=3)
    assert page.total == 4 and len(page.calls) == 3
    assert [c.call_id for c in page.calls] == [known.ids["D"], known.ids["C"], known.ids["B"]]  # newest first
    page2 = svc.search_calls(period, page=2, per_page=3)
    assert [c.call_id for c in page2.calls] == [known.ids["A"]]
    only = svc.search_calls(CallQuery(since=known.since, until=known.until, disposition="transferred"))
    assert [c.call_id for c in only.calls] == [known.ids["B"]]
    by_words = svc.search_calls(CallQuery(since=known.since, until=known.until, text="SABER DE MI"))
    assert [c.call_id for c in by_words.calls] == [known.ids["A"]]
    by_intent = svc.search_calls(CallQuery(since=known.since, until=known.until, intent="turismo"))
    assert [c.call_id for c in by_intent.calls] == [known.ids["D"]]
    by_folio = svc.search_calls(CallQuery(folio=known.folio))
    assert [c.call_id for c in by_folio.calls] == [known.ids["A"]]
    detail = svc.call_detail(known.ids["B"])
    assert detail is not None
    assert (detail.disposition, detail.transfer_reason, detail.no_match, detail.turns, detail.worker) == \
        ("transferred", "no_match", 1, 2, "w0")
    assert detail.caller == "******0101" and detail.duration_s == pytest.approx(120.0)
    assert detail.latency_p50_ms == 610 and detail.latency_max_ms == 1200
    with pytest.raises(InvalidInput):
        svc.search_calls(CallQuery(disposition="bogus"))


def test_stats_replay_replaces_and_bad_input_is_refused(svc: CaseService, known: KnownCalls) -> None:
    call_id = known.ids["D"]
    again = {"turns_count": 1, "speech_turns": 1, "tallies": [["intent", "turismo", 1], ["city", "xalapa", 1]]}
    svc.record_call_stats(call_id, again)                             # an outbox replay of the same write
    assert dict(svc.dashboard(known.since, known.until).top_cities) == {"xalapa": 2}
    for bad in ({"no_match_count": -1}, {"turns_count": "many"}, {"tallies": [["color", "x", 1]]},
                {"tallies": ["nope"]}):
        with pytest.raises(InvalidInput):
            svc.record_call_stats(call_id, bad)


async def test_recorder_sends_the_stats_before_the_close(svc: CaseService, tmp_path: Path) -> None:
    recorder = CaseRecorder(svc, data_dir=tmp_path, name="nodo1-w3")
    await recorder.start()
    call_id = f"{uuid.uuid4().hex}@127.0.0.1"
    await recorder.call_started(CallInfo(call_id, "2281112233", "veratur", "nodo1"))
    stats = CallStats()
    stats.ask(["¿Qué desea?"])
    stats.caller_turn(dtmf=True, expect_kind="menu", text=None, intent="menu_tramites")
    await recorder.call_stats(call_id, stats.summary([0.35]))
    await recorder.call_ended(call_id, "completed")
    await recorder.stop()
    detail = svc.call_detail(call_id)
    assert detail is not None
    assert (detail.worker, detail.dtmf_turns, detail.latency_p50_ms, detail.intents) == \
        ("nodo1-w3", 1, 350, ("menu_tramites",))
    assert detail.disposition == "completed" and detail.duration_s is not None
