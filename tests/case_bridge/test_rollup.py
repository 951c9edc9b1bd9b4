"""The dashboard's hourly rollup equals a direct count of the raw rows after inserts, after edits to closed calls
(a replayed stats write, a late turn, a case linked after the close, a dead worker's calls closed) and after a
backfill from scratch (SQLite and PostgreSQL), with outbound (callback) calls mixed in: they are counted in the
`direction` kind only, every other kind counts the inbound calls."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select

from case_bridge.models import CallRecord, CallRollup, CallTally, Case, TranscriptTurn
from case_bridge.rollup import backfill
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.vocabulary import NO_MATCH_INTENTS

T0 = datetime(2021, 3, 1, 15, 50, tzinfo=UTC)      # calls straddle 16:00 UTC; a year no other test seeds


def _rollup(svc: CaseService, node: str, hourly: bool = False) -> dict[Any, tuple[int, float]]:
    with svc.engine.connect() as conn:
        rows = conn.execute(select(CallRollup.hour, CallRollup.kind, CallRollup.key, CallRollup.n, CallRollup.total)
                            .where(CallRollup.node == node)).all()
    out: dict[Any, tuple[int, float]] = {}
    for h, kind, key, n, total in rows:
        k = (h.isoformat() if hasattr(h, "isoformat") else str(h), kind, key) if hourly else (kind, key)
        prev = out.get(k, (0, 0.0))
        out[k] = (prev[0] + n, round(prev[1] + total, 3))
    return {k: v for k, v in out.items() if v[0]}


def _direct(svc: CaseService, node: str) -> dict[Any, tuple[int, float]]:
    """The same figures by GROUP BY over the raw tables (no rollup code involved)."""
    any_closed = and_(CallRecord.node == node, CallRecord.ended_at.is_not(None))
    closed = and_(any_closed, CallRecord.direction == "inbound")
    out: dict[Any, tuple[int, float]] = {}
    with svc.engine.connect() as conn:
        for d, n, t in conn.execute(select(CallRecord.direction, func.count(),
                                           func.sum(func.coalesce(CallRecord.duration_s, 0.0)))
                                    .where(any_closed).group_by(CallRecord.direction)):
            out[("direction", d)] = (n, round(float(t), 3))
        for d, n, t in conn.execute(select(CallRecord.disposition, func.count(),
                                           func.sum(func.coalesce(CallRecord.duration_s, 0.0)))
                                    .where(closed).group_by(CallRecord.disposition)):
            out[("disposition", d)] = (n, round(float(t), 3))
        with_dur, dur = conn.execute(select(func.count(CallRecord.duration_s), func.sum(CallRecord.duration_s))
                                     .where(closed)).one()
        if with_dur:
            out[("duration", "")] = (with_dur, round(float(dur or 0.0), 3))
        reason = func.coalesce(CallRecord.transfer_reason, "sin motivo")
        for r, n in conn.execute(select(reason, func.count()).where(
                closed, CallRecord.disposition.in_(("transferred", "transfer_failed"))).group_by(reason)):
            out[("transfer_reason", r)] = (n, 0.0)
        for kind, key, n in conn.execute(select(CallTally.kind, CallTally.key, func.sum(CallTally.n))
                                         .join(CallRecord, CallRecord.id == CallTally.call_id).where(closed)
                                         .group_by(CallTally.kind, CallTally.key)):
            out[(kind, key)] = (int(n), 0.0)
        for tramite, n in conn.execute(select(Case.tramite_id, func.count()).select_from(CallRecord)
                                       .join(Case, Case.id == CallRecord.case_id)
                                       .where(closed).group_by(Case.tramite_id)):
            out[("tramite", tramite)] = (n, 0.0)
        b = CallRecord.latency_p50_ms // 50
        for bin_, n in conn.execute(select(b, func.count()).where(closed, CallRecord.latency_p50_ms.is_not(None))
                                    .group_by(b)):
            out[("latency", str(bin_))] = (n, 0.0)
        conf, nomatch = conn.execute(select(
            func.count(TranscriptTurn.confidence),
            func.sum(case((TranscriptTurn.intent.in_(sorted(NO_MATCH_INTENTS)), 1), else_=0)))
            .join(CallRecord, CallRecord.id == TranscriptTurn.call_id)
            .where(closed, TranscriptTurn.speaker == "caller")).one()
    out[("confidence", "*")] = (int(conf or 0), 0.0)
    out[("not_understood", "*")] = (int(nomatch or 0), 0.0)
    return out


def _fold(rollup: dict[Any, tuple[int, float]]) -> dict[Any, tuple[int, float]]:
    """Per-bin confidence and per-phrase counts summed (the direct count has their totals), peaks left out."""
    out: dict[Any, tuple[int, float]] = {}
    for (kind, key), (n, t) in rollup.items():
        if kind == "peak":
            continue
        k = (kind, "*") if kind in ("confidence", "not_understood") else (kind, key)
        prev = out.get(k, (0, 0.0))
        out[k] = (prev[0] + n, round(prev[1] + t, 3))
    return out


def _call(svc: CaseService, node: str, i: int, disposition: str | None, *, base: datetime = T0,
          direction: str = "inbound", **stats: Any) -> str:
    cid = f"r{i}-{uuid.uuid4().hex[:8]}@rollup.test"
    t0 = base + timedelta(minutes=4 * i)
    svc.link_call(cid, "2285550101", node=node, started_at=t0, answered_at=t0 + timedelta(seconds=2),
                  direction=direction)
    svc.add_turn(cid, "caller", f"no entiendo {i} 2281234567", "nlu_fallback", 0.2 + 0.1 * i, at=t0,
                 idempotency_key=f"{cid}#1")
    svc.add_turn(cid, "caller", "[DTMF 1]", "menu", None, at=t0 + timedelta(seconds=5), idempotency_key=f"{cid}#2")
    svc.record_call_stats(cid, {"latency_p50_ms": 300 + 40 * i, "worker": "w1",
                                "transfer_reason": "no_match" if disposition == "transferred" else None,
                                "tallies": [["intent", "menu", 1], ["asked", "¿Qué desea?", 2],
                                            ["no_match", "¿Qué desea?", i % 2]], **stats})
    if disposition:
        svc.close_call(cid, disposition, ended_at=t0 + timedelta(minutes=3 + i))
    return cid


def test_rollup_equals_direct_count_through_inserts_edits_and_backfill(svc: CaseService) -> None:
    node = f"n{uuid.uuid4().hex[:8]}"
    ids = [_call(svc, node, i, d) for i, d in enumerate(["completed", "transferred", "abandoned", "completed",
                                                          None, None])]
    # callbacks with the same turns, tallies and stats as the calls received: none of it may reach those kinds
    out = [_call(svc, node, i, d, direction="outbound") for i, d in ((6, "completed"), (7, "transferred"), (8, None))]
    assert _fold(_rollup(svc, node)) == _direct(svc, node)
    assert _rollup(svc, node)[("disposition", "completed")][0] == 2
    assert _rollup(svc, node)[("direction", "outbound")][0] == 2 and _rollup(svc, node)[("direction", "inbound")][0] == 4

    # edits to closed calls: a replayed stats write with other figures, a late turn, a case opened afterwards
    svc.record_call_stats(ids[0], {"latency_p50_ms": 1900, "tallies": [["city", "xalapa", 3]]})
    svc.add_turn(ids[1], "caller", "otra cosa", "out_of_scope", 0.99, at=T0 + timedelta(minutes=9),
                 idempotency_key=f"{ids[1]}#late")
    svc.open_case("acta_nacimiento", "phone", call_id=ids[2], idempotency_key=f"rollup:{node}",
                  citizen=CitizenInfo("Ana Pérez", phone="2285550101"))
    svc.open_case("acta_nacimiento", "phone", call_id=out[0], idempotency_key=f"rollup-out:{node}",
                  citizen=CitizenInfo("Ana Pérez", phone="2285550101"))       # a callback linked to a case
    svc.add_turn(out[1], "caller", "no le entiendo", "nlu_fallback", 0.4, at=T0 + timedelta(minutes=29),
                 idempotency_key=f"{out[1]}#late")                          # a late turn of a closed callback
    svc.record_call_stats(out[0], {"latency_p50_ms": 700, "tallies": [["city", "xalapa", 5]]})
    closed = svc.close_calls_of_node(node, "lost", started_before=T0 + timedelta(minutes=17))  # call 4 only
    assert closed == 1
    svc.close_call(ids[5], "error", ended_at=T0 + timedelta(minutes=30))
    svc.close_call(ids[5], "completed")                   # a replayed close changes nothing
    svc.close_call(out[2], "completed", ended_at=T0 + timedelta(minutes=45))
    direct = _direct(svc, node)
    assert _fold(_rollup(svc, node)) == direct
    assert direct[("city", "xalapa")] == (3, 0.0) and direct[("tramite", "acta_nacimiento")] == (1, 0.0)
    assert direct[("direction", "outbound")][0] == 3 and direct[("direction", "inbound")][0] == 6
    assert ("lost" in {k for _, k in direct}) and ("error" in {k for _, k in direct})

    # peaks: calls 0..2 overlap (15:50-15:53, 15:54-15:58, 15:58-16:03), call 3 (16:02-16:08) overlaps call 2
    live = _rollup(svc, node, hourly=True)
    with svc.engine.begin() as conn:
        backfill(conn)
    rebuilt = _rollup(svc, node, hourly=True)
    assert rebuilt == live
    hours = {h for h, kind, _ in live if kind == "disposition"}
    assert len(hours) == 2                                # 15:00 and 16:00 UTC


def test_dashboard_reads_the_rollup(svc: CaseService) -> None:
    node, base = f"n{uuid.uuid4().hex[:8]}", T0 - timedelta(days=30)     # a period of its own
    for i, d in enumerate(["completed", "completed", "abandoned"]):
        _call(svc, node, i, d, base=base)
    _call(svc, node, 3, None, base=base)                  # still open: counted as in progress from the raw table
    dash = svc.dashboard(base - timedelta(minutes=50), base + timedelta(hours=2, minutes=10))
    assert dash.dispositions == {"completed": 2, "abandoned": 1, "in_progress": 1}
    assert dash.peak_concurrent == 1 and dash.aht_s is not None
    assert sum(n for _, n in dash.per_hour) == 3
    assert ("¿Qué desea?" in {s.step for s in dash.lost_steps})
    assert all("2281234567" not in phrase for phrase, _ in dash.not_understood)
