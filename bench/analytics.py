"""Dashboard and call-search query times over N synthetic calls (default 100,000 over 60 days), SQLite and PostgreSQL.

    .venv/bin/python -m bench.analytics [--calls 100000] [--days 60] [--backends sqlite,postgres] [--runs 10]

Rows are bulk-inserted with Core (≈4 tallies and 2 transcript turns per call, some cases with a later web
interaction), the hourly rollup is built by `case_bridge.rollup.backfill` (what migration 0005 does to existing
calls); then each page's data is read for a 7-day and a 30-day period: dashboard p50/p95 over --runs runs against
the 300 ms goal (computed: the cache cleared before each run; cached: the settled hours from the cache, the
current hour — the period's last — read as every request does), search and live view best of 3. Last, the cost the rollup adds to a call's close (link + stats +
close through the service, with and without the rollup step).
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from case_bridge import journeys
from case_bridge.call_records import CallQuery
from case_bridge.migrate import upgrade
from case_bridge.models import CallRecord, CallTally, Case, Interaction, Tramite, TranscriptTurn
from case_bridge.rollup import backfill
from case_bridge.service import CaseService
from testkit.db import create_pg_database, drop_pg_database, pg_url

GOAL_MS = 300.0
DISPOSITIONS = ["completed"] * 6 + ["transferred"] * 2 + ["abandoned", "transfer_failed"]
INTENTS = ["consultar_estado", "turismo", "tramite_info", "nlu_fallback", "agente", "menu_tramites"]
STEPS = ["¿En qué le puedo ayudar?", "Marque su folio de ocho dígitos.", "¿Qué ciudad le interesa?",
         "Diga el trámite que busca.", "¿Desea algo más?"]
CITIES = ["xalapa", "veracruz", "coatzacoalcos", "orizaba", "córdoba", "papantla", "tuxpan"]
BATCH = 5000


def populate(svc: CaseService, calls: int, days: int, end: datetime) -> None:
    rng = random.Random(7)
    engine = svc.engine
    with engine.begin() as conn:
        conn.execute(insert(Tramite), [{"id": "acta", "name": "Acta", "agency": "RC", "start_channels": ["phone"],
                                        "finish_channels": ["web"], "requirements": [], "offices": []}])
    call_id = case_id = 0
    t_start = time.perf_counter()
    while call_id < calls:
        rec, tal, turns, cases, inter = [], [], [], [], []
        for _ in range(min(BATCH, calls - call_id)):
            call_id += 1
            started = end - timedelta(seconds=rng.uniform(0, days * 86400))
            dur = rng.uniform(20, 400)
            disp = rng.choice(DISPOSITIONS)
            linked = rng.random() < 0.2
            if linked:
                case_id += 1
                cases.append({"id": case_id, "folio": f"{case_id:08d}", "pin_hash": "x", "tramite_id": "acta",
                              "status": "open", "created_channel": "phone", "current_channel": "phone",
                              "missing": [], "data": {}, "created_at": started, "updated_at": started, "version": 1})
                inter.append({"case_id": case_id, "channel": "phone", "started_at": started, "outcome": disp,
                              "summary": "", "call_id": call_id})
                if rng.random() < 0.3:
                    inter.append({"case_id": case_id, "channel": rng.choice(["web", "office"]),
                                  "started_at": started + timedelta(hours=rng.uniform(1, 72)), "outcome": "x",
                                  "summary": "", "call_id": None})
            p50 = rng.randint(250, 1500)
            rec.append({"id": call_id, "sip_call_id": f"{call_id}-{uuid.uuid4().hex[:8]}@bench",
                        "caller_masked": "******0101", "caller_hash": "h", "called": "veratur", "node": "nodo1",
                        "worker": f"w{call_id % 4}", "case_id": case_id if linked else None, "started_at": started,
                        "answered_at": started, "ended_at": started + timedelta(seconds=dur), "disposition": disp,
                        "duration_s": dur, "turns_count": 3, "speech_turns": 2, "dtmf_turns": 1,
                        "no_match_count": rng.randint(0, 2), "no_input_count": rng.randint(0, 1), "barge_ins": 0,
                        "latency_p50_ms": p50, "latency_max_ms": p50 + rng.randint(0, 800),
                        "transfer_reason": "no_match" if disp.startswith("transfer") else None})
            step = rng.choice(STEPS)
            intent = rng.choice(INTENTS)
            tal += [{"call_id": call_id, "kind": "intent", "key": intent, "n": 1},
                    {"call_id": call_id, "kind": "asked", "key": step, "n": 2},
                    {"call_id": call_id, "kind": rng.choice(["no_match", "no_input"]), "key": step, "n": 1},
                    {"call_id": call_id, "kind": "city", "key": rng.choice(CITIES), "n": 1}]
            for k in range(2):
                turns.append({"call_id": call_id, "speaker": "caller", "text": f"frase {rng.randint(0, 300)}",
                              "intent": intent, "confidence": rng.random(),
                              "at": started + timedelta(seconds=10 * (k + 1)),
                              "idempotency_key": f"{call_id}#{k}"})
        with engine.begin() as conn:
            if cases:
                conn.execute(insert(Case), cases)
            conn.execute(insert(CallRecord), rec)
            conn.execute(insert(CallTally), tal)
            conn.execute(insert(TranscriptTurn), turns)
            if inter:
                conn.execute(insert(Interaction), inter)
    print(f"  populated {calls} calls in {time.perf_counter() - t_start:.1f} s")
    t = time.perf_counter()
    with engine.begin() as conn:
        counted = backfill(conn)
    print(f"  rollup backfill of {counted} closed calls: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    with engine.begin() as conn:       # the Core inserts above bypass the session hook that keeps journeys
        cases_n = journeys.backfill(conn)
    print(f"  journeys backfill of {cases_n} phone cases: {time.perf_counter() - t:.1f} s")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("cases", "call_records", "interactions"):    # ids were given explicitly above
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT max(id) FROM {table}))")
            # what autovacuum does to a loaded table: statistics, and the visibility map that lets the covering
            # indexes answer without visiting the table (index-only scans)
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def best_ms(fn, runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def percentiles_ms(fn, runs: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def measure(svc: CaseService, end: datetime, runs: int) -> None:
    now = end - timedelta(minutes=30)             # the period ends in the current hour, as "today" does
    for days in (7, 30):
        since = end - timedelta(days=days)
        period = CallQuery(since=since, until=end)
        words = CallQuery(since=since, until=end, text="frase 42")
        d = svc.dashboard(since, end, now=now)

        def cold(s: datetime = since) -> None:
            svc.dashboard_cache.clear()           # every run computes the figures: what a changed period costs
            svc.dashboard(s, end, now=now)
        p50, p95 = percentiles_ms(cold, runs)
        w50, w95 = percentiles_ms(lambda s=since: svc.dashboard(s, end, now=now), runs)  # type: ignore[misc]
        page = best_ms(lambda q=period: svc.search_calls(q))  # type: ignore[misc]
        text = best_ms(lambda q=words: svc.search_calls(q))  # type: ignore[misc]
        live = best_ms(lambda: svc.live_calls(3600, now=end))
        verdict = "meets" if p95 <= GOAL_MS else "MISSES"
        print(f"  {days:>2}-day period ({d.calls} calls): dashboard computed p50 {p50:6.1f} ms p95 {p95:6.1f} ms"
              f" ({verdict} the {GOAL_MS:.0f} ms goal), cached p50 {w50:5.1f} ms p95 {w95:5.1f} ms"
              f" | search p1 {page:6.1f} ms | search by words {text:6.1f} ms | live {live:5.1f} ms")
    # breakdown of the 30-day dashboard, computed (no cache)
    from case_bridge.analytics import _Partial, _Queries
    since = end - timedelta(days=30)
    with svc.uow.reader() as conn:
        q = _Queries(conn, since, end, now=end - timedelta(minutes=30))
        parts = {
            "token": best_ms(q.token, 1),
            "rollup (settled hours)": best_ms(lambda: q._rollup(_Partial(), q.h0, q.hc), 1),
            "cross-channel": best_ms(lambda: q._cross_channel(_Partial(), q.since, q.until), 1),
            "current hour": best_ms(q.current, 1),
            "open calls": best_ms(lambda: q.with_open_calls(d), 1),
            "merge + figures": best_ms(lambda: q.settled().merge(q.current()).dashboard(since, end), 1),
        }
    print("  30-day breakdown (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()))


def close_cost(svc: CaseService, end: datetime, n: int = 100) -> None:
    """Per call: link, one stats write and the close through the service (what the engine's recorder sends), with
    the rollup kept in step and, for comparison, with its step replaced by a no-op."""
    import contextlib

    import case_bridge.call_records as call_records_mod
    import case_bridge.calls as calls_mod

    def run(tag: str) -> tuple[float, float]:
        times = []
        for i in range(n):
            cid = f"close-{tag}-{i}-{uuid.uuid4().hex[:6]}@bench"
            t0 = end - timedelta(minutes=i)
            t = time.perf_counter()
            svc.link_call(cid, "2285550101", node="nodo1", started_at=t0, answered_at=t0)
            svc.record_call_stats(cid, {"latency_p50_ms": 400, "tallies": [["intent", "turismo", 1],
                                                                          ["asked", STEPS[0], 1]]})
            svc.close_call(cid, "completed", ended_at=t0 + timedelta(seconds=90))
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        return times[n // 2], times[int(0.95 * n)]

    with_rollup = run("rollup")
    saved = calls_mod.track, call_records_mod.track
    calls_mod.track = call_records_mod.track = lambda s, call: contextlib.nullcontext()  # type: ignore[assignment,return-value]
    try:
        without = run("plain")
    finally:
        calls_mod.track, call_records_mod.track = saved
    print(f"  a call's link + stats + close over {n} calls: p50 {with_rollup[0]:.1f} ms p95 {with_rollup[1]:.1f} ms"
          f" with the rollup kept in step, p50 {without[0]:.1f} ms p95 {without[1]:.1f} ms without")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at start")
    end = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
    for backend in args.backends.split(","):
        print(f"{backend}: {args.calls} calls over {args.days} days")
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                upgrade(url)
                svc = CaseService.from_url(url)
                try:
                    populate(svc, args.calls, args.days, end)
                    measure(svc, end, args.runs)
                    close_cost(svc, end)
                finally:
                    svc.close()
        else:
            name = create_pg_database("bench_ops")
            try:
                url = pg_url(name)
                upgrade(url)
                svc = CaseService.from_url(url)
                try:
                    populate(svc, args.calls, args.days, end)
                    measure(svc, end, args.runs)
                    close_cost(svc, end)
                finally:
                    svc.close()
            finally:
                drop_pg_database(name)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
