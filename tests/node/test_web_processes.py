"""Several web processes on one port (SO_REUSEPORT, as `veratur up` runs web.processes of them): a session, a
CSRF token and a PIN lockout made through one process hold in the other. Real `veratur web` processes on
PostgreSQL and Redis; each process is reached on its own Unix socket (var/run/web-N.sock), since the shared port
hands a connection to whichever process the kernel picks."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis
from yarl import URL

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.paths import REPO_ROOT
from testkit.db import case_service, migrated_postgres
from testkit.ports import free_port_block

pytestmark = pytest.mark.postgres

# Redis database of this test only: over a Unix socket every request's client key is `ip:unknown`, and the
# failures counted here must not lock that key for other tests (the keys are deleted at the end as well).
REDIS_URL = "redis://127.0.0.1:6379/15"
BASE = URL("http://localhost")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    yield from migrated_postgres("webproc")


@pytest.fixture(scope="module")
def service(pg_url: str) -> Iterator[CaseService]:
    svc = case_service(pg_url, "webproc", redis_url=REDIS_URL)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def web_processes(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[Path]]]:
    data = tmp_path_factory.mktemp("webproc")
    port = free_port_block(1)
    env = dict(os.environ, VERATUR__DATABASE__URL=pg_url, VERATUR__REDIS__URL=REDIS_URL,
               VERATUR__WEB__PORT=str(port), VERATUR__WEB__SECRET_KEY_FILE=str(data / "web.key"),
               VERATUR__DATA_DIR=str(data))
    procs = [subprocess.Popen([sys.executable, "-m", "veratur.cli", "--log-level", "WARNING", "web", "--index",
                               str(i), "--reuse-port", "--no-migrate"], env=env, cwd=REPO_ROOT,
                              start_new_session=True) for i in range(2)]
    sockets = [data / "run" / f"web-{i}.sock" for i in range(2)]
    try:
        asyncio.run(_wait_ready(sockets, procs))
        yield port, sockets
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(15)
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter("veratur:*"):
            r.delete(key)
        r.close()


async def _wait_ready(sockets: list[Path], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    for sock in sockets:
        while True:
            assert all(p.poll() is None for p in procs), "a web process exited at start (both bind the port)"
            try:
                async with _client(sock) as http, http.get(BASE / "healthz") as r:
                    if r.status == 200:
                        break
            except (aiohttp.ClientError, OSError):
                pass
            assert time.monotonic() < deadline, f"{sock} never answered"
            await asyncio.sleep(0.2)


def _client(sock: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))


@pytest.fixture
async def clients(web_processes: tuple[int, list[Path]]) -> AsyncIterator[list[aiohttp.ClientSession]]:
    _, sockets = web_processes
    sessions = [_client(sock) for sock in sockets]
    yield sessions
    for s in sessions:
        await s.close()


def _move_cookies(src: aiohttp.ClientSession, dst: aiohttp.ClientSession) -> None:
    dst.cookie_jar.clear()
    dst.cookie_jar.update_cookies(src.cookie_jar.filter_cookies(BASE))


async def test_both_processes_serve_the_one_port(web_processes: tuple[int, list[Path]]) -> None:
    port, sockets = web_processes
    assert all(sock.is_socket() for sock in sockets)
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200 and (await r.json())["database"] == "ok"


async def test_session_and_csrf_token_from_one_process_hold_in_the_other(
        service: CaseService, clients: list[aiohttp.ClientSession]) -> None:
    first, second = clients
    opened = service.open_case("acta_nacimiento", "phone", citizen=CitizenInfo("Rosa Pérez"))
    page = await (await first.get(BASE)).text()
    found = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert found, page[:300]
    token = found.group(1)
    r = await first.post(BASE / "consulta", data={"_csrf": token, "folio": opened.case.folio, "pin": opened.pin},
                         allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/caso"

    r = await second.get(BASE / "caso", allow_redirects=False)          # no cookie yet: no case
    assert r.status == 302
    _move_cookies(first, second)
    r = await second.get(BASE / "caso", allow_redirects=False)          # process 0's session, read by process 1
    assert r.status == 200 and "acta de nacimiento" in (await r.text()).lower()

    r = await second.post(BASE / "salir", data={"_csrf": "forged"}, allow_redirects=False)
    assert r.status == 403
    r = await second.post(BASE / "salir", data={"_csrf": token}, allow_redirects=False)   # process 0's token
    assert r.status == 303
    _move_cookies(second, first)
    r = await first.get(BASE / "caso", allow_redirects=False)           # signed out in 1: out in 0 too
    assert r.status == 302


async def test_pin_lockout_counted_across_processes(service: CaseService,
                                                    clients: list[aiohttp.ClientSession]) -> None:
    first, second = clients
    opened = service.open_case("acta_nacimiento", "kiosk")
    url = BASE / "open311/v2/requests" / f"{opened.case.folio}.json"
    wrong = {"X-Veratur-PIN": str((int(opened.pin) + 1) % 10000).zfill(4)}
    statuses = []
    for http in (first, second, first):                                 # 3 failures split over the processes
        async with http.get(url, headers=wrong) as r:
            statuses.append(r.status)
    assert statuses == [404, 404, 429]
    for http in (second, first):                                        # locked in both, even with the PIN
        async with http.get(url, headers={"X-Veratur-PIN": opened.pin}) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) > 0

    other = service.open_case("acta_nacimiento", "kiosk")
    async with second.get(BASE / "open311/v2/requests" / f"{other.case.folio}.json",
                          headers={"X-Veratur-PIN": other.pin}) as r:
        assert r.status == 200 and (await r.json())[0]["service_request_id"] == other.case.folio
