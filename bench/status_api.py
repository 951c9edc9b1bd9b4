"""Benchmark: the case-status lookup API (folio + PIN) on PostgreSQL at a fixed request rate.

Creates a scratch database on 127.0.0.1:5432, migrates it, opens `--cases` cases, starts `veratur web` as a real
process on a free port, then sends GET /open311/v2/requests/{folio}.json with the PIN header at `--rate` requests
per second for `--seconds` (open loop: each request is scheduled on a fixed timetable and its latency is measured
from the scheduled time, so a slow server can't hide its queueing). Prints p50/p90/p99/max and errors; the goal is
p99 < 20 ms at 200 requests/s. Also prints the server's CPU time per request and the machine's load average, since
on a shared machine the tail mostly measures the CPU left to the server. The scratch database and the server are
removed at the end.

    .venv/bin/python bench/status_api.py [--rate 200] [--seconds 10] [--cases 200]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from case_bridge.migrate import upgrade  # noqa: E402
from case_bridge.service import CaseService  # noqa: E402
from case_bridge.views import CitizenInfo, TramiteInfo  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TRAMITE = TramiteInfo("bench", "Trámite de prueba", "Banco de pruebas", ("kiosk",), ("office",), ("CURP",), ())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the web server did not become ready")


async def load(url: str, cases: list[tuple[str, str]], rate: float, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        # warm up the connection pool and the server's database pool
        for folio, pin in cases[:20]:
            async with http.get(f"{url}/open311/v2/requests/{folio}.json", headers={"X-Veratur-PIN": pin}) as r:
                await r.read()

        async def one(scheduled: float, folio: str, pin: str) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                async with http.get(f"{url}/open311/v2/requests/{folio}.json",
                                    headers={"X-Veratur-PIN": pin}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        start = time.perf_counter() + 0.1
        total = int(rate * seconds)
        tasks = [asyncio.create_task(one(start + i / rate, *random.choice(cases))) for i in range(total)]
        await asyncio.gather(*tasks)
    return latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args()

    name = f"veratur_bench_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    server: subprocess.Popen[bytes] | None = None
    try:
        upgrade(url)
        svc = CaseService.from_url(url)
        svc.upsert_tramites([TRAMITE])
        cases = []
        for i in range(args.cases):
            opened = svc.open_case("bench", "kiosk", citizen=CitizenInfo(f"Persona {i}"))
            cases.append((opened.case.folio, opened.pin))
        svc.close()
        port = free_port()
        env = dict(os.environ, VERATUR__DATABASE__URL=url, VERATUR__WEB__PORT=str(port),
                   VERATUR__WEB__SECRET_KEY_FILE=f"/tmp/{name}.key")
        server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "veratur"), "--log-level", "WARNING", "web",
                                   "--no-migrate"], env=env, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base))
        proc = psutil.Process(server.pid)
        cpu_before = proc.cpu_times()
        latencies, errors = asyncio.run(load(base, cases, args.rate, args.seconds))
        cpu_after = proc.cpu_times()
        server_cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        Path(f"/tmp/{name}.key").unlink(missing_ok=True)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    print(f"status API on PostgreSQL: {len(ms)} requests at {args.rate:.0f}/s for {args.seconds:.0f} s, "
          f"{errors} errors")
    print(f"  p50 {q[49]:.1f} ms   p90 {q[89]:.1f} ms   p99 {q[98]:.1f} ms   max {ms[-1]:.1f} ms   "
          f"(goal p99 < 20 ms: {'met' if q[98] < 20 else 'NOT met'})")
    per_request_ms = server_cpu_s * 1000 / max(len(ms), 1)
    print(f"  server CPU {per_request_ms:.2f} ms per request (one process saturates near "
          f"{1000 / max(per_request_ms, 0.001):.0f} req/s on a free core); "
          f"load average during the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
