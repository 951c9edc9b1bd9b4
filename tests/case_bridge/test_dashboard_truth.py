"""Every dashboard figure (read from the hourly rollup, the per-case journeys and the dashboard cache) equals a
recomputation in plain Python from the raw rows — calls, tallies, turns, cases, interactions, status changes —
on SQLite and PostgreSQL: for a period that does not start or end on the hour, with calls that span an hour
boundary, calls still open, and then after late-arriving records (a stats write, a transcript turn and a case
linked after the close, an earlier phone call of a case replayed late, contacts on other channels added later),
each of which must also invalidate the cached dashboard. The journeys' backfill (migration 0007) equals the
incremental rows, also when the migration itself fills them from existing data."""
from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from alembic import command
from sqlalchemy import column, insert, select, table

from case_bridge import journeys
from case_bridge.analytics import MIN_ASKED_FOR_RATE, TOP_N, Dashboard
from case_bridge.migrate import alembic_config, upgrade
from case_bridge.models import (
    CallRecord,
    CallTally,
    Case,
    CaseJourney,
    CaseStatusChange,
    Interaction,
    Tramite,
    TranscriptTurn,
)
from case_bridge.service import CaseService
from case_bridge.views import LOCAL_TZ, CitizenInfo
from foundation.logs import scrub
from foundation.vocabulary import NO_MATCH_INTENTS

from .conftest import create_pg_database, drop_pg_database, pg_url

DISPOSITIONS = ["completed", "completed", "completed", "transferred", "transfer_failed", "abandoned", "error"]
STEPS = ["menu", "folio", "ciudad", "tramite"]
PHRASES = ["no se", "ehh 2281234567", "otra cosa", "bueno bueno"]     # one holds a phone number (masked)
OTHER = ("web", "office", "call_center", "kiosk")
HOUR = timedelta(hours=1)


def _aware(t: Any) -> datetime:
    t = datetime.fromisoformat(t) if isinstance(t, str) else t
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


# -- the oracle: every figure from the raw rows, in Python -------------------------------------------------------
def raw_dashboard(svc: CaseService, since: datetime, until: datetime) -> dict[str, Any]:
    h0 = since.replace(minute=0, second=0, microsecond=0)
    h1 = until.replace(minute=0, second=0, microsecond=0)
    h1 = h1 + HOUR if h1 != until else h1
    with svc.uow.session() as s:
        calls = s.execute(select(CallRecord).where(CallRecord.started_at >= h0 - timedelta(days=1),
                                                   CallRecord.started_at < h1)).scalars().all()
        ids = [c.id for c in calls]
        tallies = s.execute(select(CallTally).where(CallTally.call_id.in_(ids))).scalars().all()
        turns = s.execute(select(TranscriptTurn).where(TranscriptTurn.call_id.in_(ids),
                                                       TranscriptTurn.speaker == "caller")).scalars().all()
        tramite = {c: t for c, t in s.execute(select(Case.id, Case.tramite_id))}
        inter = s.execute(select(Interaction.case_id, Interaction.channel, Interaction.started_at)).all()
        changes = s.execute(select(CaseStatusChange.case_id, CaseStatusChange.channel, CaseStatusChange.at)).all()
    in_period = [c for c in calls if h0 <= c.started_at < h1]
    closed = [c for c in in_period if c.ended_at is not None]
    closed_ids = {c.id for c in closed}
    dispositions = Counter(c.disposition or "in_progress" for c in closed)
    open_n = sum(1 for c in in_period if c.ended_at is None)
    if open_n:
        dispositions["in_progress"] = open_n

    def day(t: datetime) -> str:
        return t.astimezone(LOCAL_TZ).date().isoformat()

    def top(counter: Counter[str], limit: int | None = TOP_N) -> dict[str, int]:
        items = sorted(((k, n) for k, n in counter.items() if n), key=lambda kv: (-kv[1], kv[0]))
        return dict(items[:limit] if limit else items)

    tally = {kind: Counter[str]() for kind in ("intent", "city", "asked", "no_match", "no_input")}
    for t in tallies:
        if t.call_id in closed_ids:
            tally[t.kind][t.key] += t.n
    steps = [(k, a, tally["no_match"][k], tally["no_input"][k]) for k, a in tally["asked"].items()
             if a >= MIN_ASKED_FOR_RATE]
    steps.sort(key=lambda x: (-(x[2] + x[3]) / x[1], -x[1], x[0]))

    # peak: most closed calls up at once at an instant of [h0, h1) (a call from before the period counts)
    ups = [(c.started_at, c.ended_at) for c in calls if c.ended_at is not None]
    candidates = [h0] + sorted(s for s, _ in ups if h0 <= s < h1)
    peak, peak_at = 0, None
    for t in candidates:
        level = sum(1 for s, e in ups if s <= t < e)
        if level > peak:
            peak, peak_at = level, t

    latency: dict[str, list[int]] = {}
    for c in closed:
        if c.latency_p50_ms is not None:
            latency.setdefault(day(c.started_at), []).append(c.latency_p50_ms)

    def pct(values: list[int], q: float) -> int:       # the 50 ms bin holding the q-th quantile, its upper edge
        ordered = sorted(values)
        for seen, v in enumerate(ordered, 1):
            if seen >= q * len(ordered):
                return (v // 50 + 1) * 50
        return 0

    conf = Counter(min(max(int(t.confidence * 10), 0), 9) for t in turns
                   if t.call_id in closed_ids and t.confidence is not None)
    durations = [c.duration_s for c in closed if c.duration_s is not None]

    # cross-channel: cases whose first phone contact ever is in [since, until); per other channel the first
    # contact there strictly after it (interaction or status change)
    first: dict[int, datetime] = {}
    for cid, ch, at in inter:
        if ch == "phone":
            first[cid] = min(first.get(cid, _aware(at)), _aware(at))
    phone_cases = {cid: f for cid, f in first.items() if since <= f < until}
    later: dict[tuple[int, str], datetime] = {}
    for cid, ch, at in [*inter, *changes]:
        at = _aware(at)
        if cid in phone_cases and ch in OTHER and at > phone_cases[cid]:
            later[(cid, ch)] = min(later.get((cid, ch), at), at)
    gaps: dict[str, list[float]] = {}
    for (cid, ch), at in later.items():
        gaps.setdefault(ch, []).append((at - phone_cases[cid]).total_seconds() / 3600)

    return {
        "calls": sum(dispositions.values()), "ended": len(closed), "dispositions": dict(dispositions),
        "per_day": sorted(Counter(day(c.started_at) for c in closed).items()),
        "per_hour": [(h, sum(1 for c in closed if c.started_at.astimezone(LOCAL_TZ).hour == h)) for h in range(24)],
        "peak": (peak, peak_at if peak else None),
        "aht_s": sum(durations) / len(durations) if durations else None,
        "transfer_reasons": top(Counter(c.transfer_reason or "sin motivo" for c in closed
                                        if c.disposition in ("transferred", "transfer_failed")), None),
        "top_intents": top(tally["intent"]), "top_cities": top(tally["city"]),
        "top_tramites": top(Counter(tramite[c.case_id] for c in closed if c.case_id is not None)),
        "lost_steps": steps[:TOP_N],
        "not_understood": top(Counter(scrub(t.text or "")[:200] for t in turns
                                      if t.call_id in closed_ids and t.intent in NO_MATCH_INTENTS)),
        "cross": (len(phone_cases), {c: len(g) for c, g in gaps.items()},
                  {c: round(median(g), 2) for c, g in gaps.items()}),
        "latency_by_day": [(d, pct(v, 0.5), pct(v, 0.95)) for d, v in sorted(latency.items())],
        "confidence_bins": [(i / 10, conf.get(i, 0)) for i in range(10)],
    }


def as_figures(d: Dashboard) -> dict[str, Any]:
    def ranked(pairs: list[tuple[str, int]]) -> dict[str, int]:
        counts = [n for _, n in pairs]
        assert counts == sorted(counts, reverse=True)          # ranked, most first
        return dict(pairs)

    return {
        "calls": d.calls, "ended": d.ended, "dispositions": d.dispositions, "per_day": d.per_day,
        "per_hour": d.per_hour, "peak": (d.peak_concurrent, d.peak_at),
        "aht_s": d.aht_s,
        "transfer_reasons": ranked(d.transfer_reasons), "top_intents": ranked(d.top_intents),
        "top_cities": ranked(d.top_cities), "top_tramites": ranked(d.top_tramites),
        "lost_steps": [(s.step, s.asked, s.no_match, s.no_input) for s in d.lost_steps],
        "not_understood": ranked(d.not_understood),
        "cross": (d.cross_channel.phone_cases, d.cross_channel.continued, d.cross_channel.median_hours),
        "latency_by_day": d.latency_by_day, "confidence_bins": d.confidence_bins,
    }


def assert_truth(svc: CaseService, since: datetime, until: datetime) -> dict[str, Any]:
    """The dashboard equals the raw rows whichever hour is the current one: all settled (cached part only), the
    current hour inside the period (cached settled hours merged with the hours read live), or before it."""
    truth = raw_dashboard(svc, since, until)
    expected = {k: v for k, v in truth.items() if k != "aht_s"}
    for now in (None, since + timedelta(hours=5, minutes=3), until - timedelta(minutes=5), since - HOUR):
        got = as_figures(svc.dashboard(since, until, now=now))
        # a sum of durations added in another order may differ in the last bit
        assert got.pop("aht_s") == pytest.approx(truth["aht_s"], rel=1e-12)
        assert got == expected, f"now={now}"
    return truth


# -- seeding through the service (the engine's recorder's calls) -------------------------------------------------
def _seed(svc: CaseService, base: datetime, rng: random.Random, n: int = 36) -> tuple[list[str], list[str]]:
    """`n` calls over ~30 hours from `base`, some spanning an hour boundary, two left open; cases on some, with
    web/office/kiosk contacts before and after the call. Returns (call ids, folios)."""
    tag = uuid.uuid4().hex[:6]
    ids, folios = [], []
    for i in range(n):
        cid = f"t{i}-{tag}@truth.test"
        t0 = base + timedelta(minutes=50 * i + rng.randint(0, 40), seconds=rng.randint(0, 59),
                              microseconds=rng.randint(0, 999_999))
        if i % 5 == 0:                                  # starts a few minutes before the hour, ends after it
            t0 = t0.replace(minute=52)
        svc.link_call(cid, "2285550101", node=f"nodo{i % 2}", started_at=t0, answered_at=t0 + timedelta(seconds=3))
        for k in range(rng.randint(1, 3)):
            intent = rng.choice(["consultar_estado", "turismo", "nlu_fallback", "out_of_scope", "menu"])
            speech = rng.random() < 0.7
            svc.add_turn(cid, "caller", rng.choice(PHRASES) if speech else "[DTMF 1]", intent,
                         round(rng.random(), 3) if speech else None, at=t0 + timedelta(seconds=8 * (k + 1)),
                         idempotency_key=f"{cid}#{k}")
        disposition = rng.choice(DISPOSITIONS)
        step = rng.choice(STEPS)
        svc.record_call_stats(cid, {
            "latency_p50_ms": rng.randint(200, 1400), "worker": f"w{i % 3}",
            "transfer_reason": rng.choice(["no_match", "pidio_agente", None]) if "transfer" in disposition else None,
            "tallies": [["intent", rng.choice(["consultar_estado", "turismo", "menu"]), 1],
                        ["city", rng.choice(["xalapa", "orizaba", "papantla"]), 1],
                        ["asked", step, 2], [rng.choice(["no_match", "no_input"]), step, rng.randint(0, 2)]]})
        if i % 4 == 1:                                  # a case opened in the call
            opened = svc.open_case("acta_nacimiento", "phone", call_id=cid, idempotency_key=f"truth:{cid}",
                                   citizen=CitizenInfo("Ana Pérez", phone="2285550101"))
            folio = opened.case.folio
            folios.append(folio)
            if i % 8 == 1:
                svc.add_interaction(folio, "web", "consulted", started_at=t0 + timedelta(hours=rng.uniform(1, 30)))
            if i % 3 == 0:
                svc.add_interaction(folio, "office", "visit", started_at=t0 + timedelta(hours=rng.uniform(2, 50)))
            if i % 12 == 1:                             # a web visit before the first call: not a continuation
                svc.add_interaction(folio, "web", "consulted", started_at=t0 - timedelta(hours=2))
        if i < n - 2:                                   # the last two are still in progress
            svc.close_call(cid, disposition, ended_at=t0 + timedelta(seconds=rng.randint(60, 1500)))
        ids.append(cid)
    return ids, folios


@pytest.fixture
def period(request: pytest.FixtureRequest) -> tuple[datetime, datetime, datetime]:
    # a month of its own per test (the session's database is shared with every case-bridge test)
    month = {"test_dashboard_equals_raw_rows_before_and_after_late_records": 6,
             "test_cache_serves_an_unchanged_period_and_drops_a_changed_one": 8}[request.node.originalname]
    base = datetime(2019, month, 10, 7, 13, tzinfo=UTC)
    return base, base + timedelta(minutes=37), base + timedelta(hours=31, minutes=11)


def test_dashboard_equals_raw_rows_before_and_after_late_records(
        svc: CaseService, period: tuple[datetime, datetime, datetime]) -> None:
    base, since, until = period
    ids, folios = _seed(svc, base, random.Random(15))
    truth = assert_truth(svc, since, until)
    assert truth["dispositions"].get("in_progress") == 2 and truth["peak"][0] >= 2
    assert truth["cross"][0] >= 3 and truth["cross"][1]                    # the figure is not trivially empty
    assert any(k.startswith("ehh ******") for k in truth["not_understood"])

    # late-arriving records, each invalidating the cached dashboard computed above
    svc.record_call_stats(ids[3], {"latency_p50_ms": 1999, "tallies": [["city", "tuxpan", 4],
                                                                      ["asked", "nuevo", 3]]})
    svc.add_turn(ids[4], "caller", "llegó tarde 2281234567", "nlu_fallback", 0.05,
                 at=base + timedelta(hours=5), idempotency_key=f"{ids[4]}#late")
    svc.open_case("licencia_conducir", "phone", call_id=ids[6], idempotency_key=f"truth-late:{ids[6]}",
                  citizen=CitizenInfo("Luis Gómez", phone="2285550101"))
    assert_truth(svc, since, until)
    # an earlier call of a case arrives late (an outbox replay): the case's first phone contact moves before
    # the period, so it is no longer a phone case of the period; its web visit now counts from the earlier call
    late = f"late-{uuid.uuid4().hex[:6]}@truth.test"
    svc.link_call(late, "2285550101", node="nodo0", started_at=base - timedelta(hours=3))
    svc.link_call_case(late, folios[0])
    svc.close_call(late, "completed", ended_at=base - timedelta(hours=2, minutes=50))
    # contacts on other channels written afterwards: a status change at an office, a kiosk visit, an agent
    svc.update_status(folios[1], "in_review", "revisión", channel="office", actor="ana")
    svc.add_interaction(folios[2], "kiosk", "consulted", started_at=base + timedelta(hours=20))
    svc.add_interaction(folios[-1], "call_center", "agent_took_call", started_at=until - timedelta(minutes=1))
    # a call that stays open when the period was read is closed later, across the hour
    svc.close_call(ids[-1], "completed", ended_at=until + timedelta(minutes=20))
    after = assert_truth(svc, since, until)
    assert after != truth
    assert after["cross"][0] == truth["cross"][0] + 1 - 1        # the late case of ids[6] in, folios[0] out
    assert after["dispositions"].get("in_progress") == 1

    # the journeys' backfill (what migration 0007 does to existing data) equals the rows kept incrementally
    def rows() -> set[tuple[Any, ...]]:
        with svc.engine.connect() as conn:
            return {(c, ch, _aware(f), _aware(a), g) for c, ch, f, a, g in conn.execute(select(
                CaseJourney.case_id, CaseJourney.channel, CaseJourney.first_phone_at, CaseJourney.at,
                CaseJourney.gap_s))}
    incremental = rows()
    with svc.engine.begin() as conn:
        journeys.backfill(conn)
    assert rows() == incremental
    assert_truth(svc, since, until)


def test_cache_serves_an_unchanged_period_and_drops_a_changed_one(
        svc: CaseService, period: tuple[datetime, datetime, datetime]) -> None:
    base, since, until = period
    ids, _ = _seed(svc, base, random.Random(7), n=12)
    cache = svc.dashboard_cache
    first = svc.dashboard(since, until)
    hits = cache.hits
    assert svc.dashboard(since, until) == first and cache.hits == hits + 1
    # a call closed in another period leaves this one's cache alone
    other = f"o-{uuid.uuid4().hex[:6]}@truth.test"
    svc.link_call(other, "2285550101", node="nodo0", started_at=base + timedelta(days=20))
    svc.close_call(other, "completed", ended_at=base + timedelta(days=20, minutes=3))
    assert svc.dashboard(since, until) == first and cache.hits == hits + 2
    # a call starting in the period is counted at once (in progress is never cached) without a recompute
    live = f"l-{uuid.uuid4().hex[:6]}@truth.test"
    svc.link_call(live, "2285550101", node="nodo0", started_at=base + timedelta(hours=2))
    again = svc.dashboard(since, until)
    assert again.dispositions["in_progress"] == first.dispositions["in_progress"] + 1 and cache.hits == hits + 3
    # its close changes a settled hour of the period: recomputed once, and equal to the raw rows
    misses = cache.misses
    svc.close_call(live, "abandoned", ended_at=base + timedelta(hours=2, minutes=30))
    closed = svc.dashboard(since, until)
    assert cache.misses == misses + 1
    assert closed.dispositions.get("abandoned", 0) == first.dispositions.get("abandoned", 0) + 1
    assert_truth(svc, since, until)

    # with the current hour inside the period: a call closing in it is read live, the settled hours stay cached
    now = base + timedelta(hours=6, minutes=40)
    svc.dashboard(since, until, now=now)
    hits, misses = cache.hits, cache.misses
    current = f"c-{uuid.uuid4().hex[:6]}@truth.test"
    svc.link_call(current, "2285550101", node="nodo1", started_at=now - timedelta(minutes=10))
    svc.close_call(current, "completed", ended_at=now - timedelta(minutes=1))
    seen = svc.dashboard(since, until, now=now)
    assert (cache.hits, cache.misses) == (hits + 1, misses)
    assert seen.dispositions["completed"] == closed.dispositions["completed"] + 1
    assert seen.peak_concurrent >= 1
    # a late record in a settled hour drops the cached part
    svc.record_call_stats(ids[0], {"tallies": [["city", "tuxpan", 2]]})
    late = svc.dashboard(since, until, now=now)
    assert cache.misses == misses + 1 and dict(late.top_cities)["tuxpan"] == 2
    assert_truth(svc, since, until)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_0007_fills_journeys_from_existing_contacts(backend: str, tmp_path: Path) -> None:
    name = create_pg_database("cb_0007") if backend == "postgres" else None
    url = pg_url(name) if name else f"sqlite:///{tmp_path / 'm.db'}"
    t0 = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)
    try:
        command.upgrade(alembic_config(url), "0006")
        svc = CaseService.from_url(url)
        try:
            with svc.engine.begin() as conn:          # rows written before 0007 (Core: no session hook)
                conn.execute(insert(Tramite), [{"id": "acta", "name": "Acta", "agency": "RC",
                                                "start_channels": ["phone"], "finish_channels": ["web"],
                                                "requirements": [], "offices": []}])
                conn.execute(insert(Case), [{"id": i, "folio": f"{i:08d}", "pin_hash": "x", "tramite_id": "acta",
                                             "status": "open", "created_channel": "phone",
                                             "current_channel": "phone", "missing": [], "data": {},
                                             "created_at": t0, "updated_at": t0, "version": 1} for i in (1, 2, 3)])
                # the 0006 columns only (the model's later ones, e.g. direction from 0010, do not exist yet)
                old_interactions = table("interactions", *(column(c, Interaction.__table__.c[c].type) for c in (
                    "case_id", "channel", "started_at", "outcome", "summary")))
                conn.execute(insert(old_interactions), [
                    {"case_id": 1, "channel": "phone", "started_at": t0, "outcome": "", "summary": ""},
                    {"case_id": 1, "channel": "web", "started_at": t0 + timedelta(hours=3), "outcome": "",
                     "summary": ""},
                    {"case_id": 2, "channel": "phone", "started_at": t0 + timedelta(minutes=30), "outcome": "",
                     "summary": ""},
                    {"case_id": 2, "channel": "web", "started_at": t0, "outcome": "", "summary": ""},   # before
                    {"case_id": 3, "channel": "web", "started_at": t0, "outcome": "", "summary": ""}]) # no phone
                conn.execute(insert(CaseStatusChange), [
                    {"case_id": 2, "from_status": "open", "to_status": "in_review", "note": "", "channel": "office",
                     "at": t0 + timedelta(hours=5)}])
        finally:
            svc.close()
        upgrade(url)
        svc = CaseService.from_url(url)
        try:
            with svc.engine.connect() as conn:
                got = {(c, ch, g) for c, ch, g in conn.execute(select(CaseJourney.case_id, CaseJourney.channel,
                                                                      CaseJourney.gap_s))}
            assert got == {(1, "phone", 0.0), (1, "web", 3 * 3600.0), (2, "phone", 0.0), (2, "office", 4.5 * 3600)}
            d = svc.dashboard(t0, t0 + timedelta(days=1))
            assert (d.cross_channel.phone_cases, d.cross_channel.continued) == (2, {"web": 1, "office": 1})
            assert d.cross_channel.median_hours == {"web": 3.0, "office": 4.5}
        finally:
            svc.close()
        command.downgrade(alembic_config(url), "0006")         # and the downgrade drops what it added
    finally:
        if name:
            drop_pg_database(name)


def test_a_long_sqlite_read_does_not_hold_writers_back(sqlite_database: str) -> None:
    """The dashboard reads through UnitOfWork.reader: on SQLite a deferred transaction (WAL: readers block no
    writer), where it used to take BEGIN IMMEDIATE and hold every call close and turn back while it ran."""
    import threading

    from sqlalchemy import func
    reader_svc, writer_svc = CaseService.from_url(sqlite_database), CaseService.from_url(sqlite_database)
    cid = f"w-{uuid.uuid4().hex[:6]}@truth.test"
    t0 = datetime(2019, 10, 1, 12, 0, tzinfo=UTC)
    writer_svc.link_call(cid, "2285550101", node="nodo0", started_at=t0)
    done = threading.Event()

    def close() -> None:
        writer_svc.close_call(cid, "completed", ended_at=t0 + timedelta(minutes=2))
        done.set()
    try:
        with reader_svc.uow.reader() as conn:
            before = conn.execute(select(func.count()).select_from(CallRecord)
                                  .where(CallRecord.ended_at.is_not(None))).scalar_one()
            writer = threading.Thread(target=close)
            writer.start()
            assert done.wait(10), "the close waited for the read to end"
            again = conn.execute(select(func.count()).select_from(CallRecord)
                                 .where(CallRecord.ended_at.is_not(None))).scalar_one()
            assert again == before                   # one snapshot for the whole read
        writer.join()
        assert writer_svc.get_call(cid).disposition == "completed"  # type: ignore[union-attr]
    finally:
        reader_svc.close()
        writer_svc.close()
