"""Dashboard and call-search query times over N synthetic calls (default 100,000 over 60 days), SQLite and PostgreSQL.

    .venv/bin/python -m bench.analytics [--calls 100000] [--days 60] [--backends sqlite,postgres]

Rows are bulk-inserted with Core (≈4 tallies and 2 transcript turns per call, some cases with a later web
interaction); then each page's data is read for a 7-day and a 30-day period, best of 3 runs.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import insert

from case_bridge.call_records import CallQuery
from case_bridge.migrate import upgrade
from case_bridge.models import CallRecord, CallTally, Case, Interaction, Tramite, TranscriptTurn
from case_bridge.service import CaseService

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
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
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    print(f"  populated {calls} calls in {time.perf_counter() - t_start:.1f} s")


def best_ms(fn, runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def measure(svc: CaseService, end: datetime) -> None:
    for days in (7, 30):
        since = end - timedelta(days=days)
        period = CallQuery(since=since, until=end)
        words = CallQuery(since=since, until=end, text="frase 42")
        d = svc.dashboard(since, end)
        dash = best_ms(lambda s=since: svc.dashboard(s, end))  # type: ignore[misc]
        page = best_ms(lambda q=period: svc.search_calls(q))  # type: ignore[misc]
        text = best_ms(lambda q=words: svc.search_calls(q))  # type: ignore[misc]
        live = best_ms(lambda: svc.live_calls(3600, now=end))
        print(f"  {days:>2}-day period ({d.calls} calls): dashboard {dash:7.1f} ms | search p1 {page:6.1f} ms"
              f" | search by words {text:6.1f} ms | live {live:5.1f} ms")
    # per-query breakdown of the 30-day dashboard
    from case_bridge.analytics import _Queries
    since = end - timedelta(days=30)
    with svc.uow.reader() as conn:
        q = _Queries(conn, since, end)
        parts = {name: best_ms(getattr(q, name), 1) for name in (
            "_dispositions", "_per_day", "_per_hour", "_peak", "_aht", "_transfer_reasons", "_top_tramites",
            "_lost_steps", "_not_understood", "_cross_channel", "_latency_by_day", "_confidence")}
    print("  30-day breakdown (ms): " + ", ".join(f"{k.strip('_')} {v:.0f}" for k, v in parts.items()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()
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
                    measure(svc, end)
                finally:
                    svc.close()
        else:
            name = f"bench_ops_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
                upgrade(url)
                svc = CaseService.from_url(url)
                try:
                    populate(svc, args.calls, args.days, end)
                    measure(svc, end)
                finally:
                    svc.close()
            finally:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
