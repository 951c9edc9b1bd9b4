"""Agent console cost: how long a transcript poll takes (the query each open console socket runs every 0.5 s) and
the delay from a committed turn to the agent's websocket, on SQLite and PostgreSQL.

Prints p50 / p95 / max of:
- `poll`: EscalationDesk.transcript(after_id=last) with nothing new, for calls with `--turns` turns, while
  `--sockets` pollers run concurrently (each in its own thread, as the web app does with asyncio.to_thread);
- `turn->ws`: add_turn committed -> the turn received on a real websocket of the real web app.

    .venv/bin/python bench/agent_console.py [--sockets 20] [--turns 200] [--rounds 100] [--pg]
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from case_bridge.escalation import EscalationDesk  # noqa: E402
from case_bridge.migrate import upgrade  # noqa: E402
from case_bridge.service import CaseService  # noqa: E402
from foundation.config import Settings  # noqa: E402
from veratur.webapp import build_app  # noqa: E402


def pct(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return f"p50 {statistics.median(values):7.2f} ms  p95 {p95:7.2f} ms  max {values[-1]:7.2f} ms  (n={len(values)})"


def setup(url: str, sockets: int, turns: int) -> tuple[CaseService, EscalationDesk, list[tuple[int, int, str]]]:
    upgrade(url)
    svc = CaseService.from_url(url, redis_url="redis://127.0.0.1:6379/0", ratelimit_prefix=uuid.uuid4().hex)
    desk = EscalationDesk(svc)
    calls = []
    for i in range(sockets):
        call_id = f"bench-{uuid.uuid4().hex}"
        svc.link_call(call_id, "2281234567")
        for n in range(turns):
            svc.add_turn(call_id, "caller" if n % 2 else "portal", f"turno {n}", idempotency_key=f"{call_id}#{n}")
        esc = desk.enqueue(call_id, "caller_request", "sip:agentes@127.0.0.1:5090")
        staff = svc.create_staff(f"bench{i}{uuid.uuid4().hex[:6]}", "contraseña-larga", "agent").id
        desk.take(esc, staff)
        calls.append((esc, staff, call_id))
    return svc, desk, calls


def bench_polls(desk: EscalationDesk, calls: list[tuple[int, int, str]], rounds: int) -> list[float]:
    lasts = {esc: desk.transcript(esc, staff)[-1].id for esc, staff, _ in calls}

    def poller(esc: int, staff: int) -> list[float]:
        out = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            desk.transcript(esc, staff, lasts[esc])
            out.append((time.perf_counter() - t0) * 1000)
        return out

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        results = pool.map(lambda c: poller(c[0], c[1]), calls)
        return [x for r in results for x in r]


async def bench_ws(svc: CaseService, rounds: int) -> list[float]:
    app = build_app(Settings(), svc, secret=uuid.uuid4().bytes * 2)
    desk = EscalationDesk(svc)
    call_id = f"bench-ws-{uuid.uuid4().hex}"
    svc.link_call(call_id, "2281234567")
    esc = desk.enqueue(call_id, "caller_request", "sip:agentes@127.0.0.1:5090")
    name = f"benchws{uuid.uuid4().hex[:6]}"
    svc.create_staff(name, "contraseña-larga", "agent")
    out = []
    async with TestClient(TestServer(app)) as client:
        page = await (await client.get("/staff/login")).text()
        token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        await client.post("/staff/login", data={"_csrf": token, "usuario": name, "contrasena": "contraseña-larga"})
        csrf = re.search(r'data-csrf="([^"]+)"', await (await client.get("/agente")).text()).group(1)  # type: ignore[union-attr]
        await client.post(f"/api/agente/llamadas/{esc}/tomar", headers={"X-CSRF-Token": csrf})
        async with client.ws_connect(f"/api/agente/llamadas/{esc}/ws") as ws:
            await ws.receive_json()                                # {"type": "call", "live": true}
            for n in range(rounds):
                t0 = time.perf_counter()
                await asyncio.to_thread(svc.add_turn, call_id, "caller", f"t{n}", idempotency_key=f"{call_id}#{n}")
                while (await ws.receive_json())["type"] != "turn":
                    pass
                out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=20)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--ws-rounds", type=int, default=30)
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL at 127.0.0.1:5432 (temporary database)")
    args = parser.parse_args()
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        targets.append(("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", None))
        if args.pg:
            import psycopg
            name = f"bench_console_{uuid.uuid4().hex[:8]}"
            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            targets.append(("postgres", f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name))
        for label, url, pg_name in targets:
            svc, desk, calls = setup(url, args.sockets, args.turns)
            polls = bench_polls(desk, calls, args.rounds)
            print(f"{label:8s} poll ({args.sockets} sockets, {args.turns} turns/call)  {pct(polls)}")
            print(f"{label:8s} turn->ws                               {pct(asyncio.run(bench_ws(svc, args.ws_rounds)))}")
            svc.close()
            if pg_name:
                import psycopg
                with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
