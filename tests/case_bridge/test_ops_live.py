"""The live view's processes up or down (issue 15, "workers and services up or down — refreshed live"): the
supervisor's state file (foundation.node_state) written by a real Supervisor over real child processes (one
killed: reported down, then up again after its restart), read by the web app's live API and page; in headless
Chromium the page follows a worker going down and the supervisor going silent without a reload."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from case_bridge.service import CaseService
from foundation import node_state
from foundation.config import Settings, load_settings
from veratur.supervisor import ChildSpec, Supervisor
from veratur.webapp import build_app

from .conftest import REDIS_URL, TEST_TRAMITES

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]


def _settings(tmp_path: Path) -> Settings:
    return load_settings(environ={**os.environ, "VERATUR__DATA_DIR": str(tmp_path)})


def test_state_file_round_trip_stale_and_malformed(tmp_path: Path) -> None:
    path = node_state.state_file(tmp_path)
    assert node_state.read(path) is None                                       # never written: unknown
    procs = [node_state.ProcessState("worker-0", True, 0, 12.5), node_state.ProcessState("rasa", False, 3, None)]
    node_state.write(path, "nodo1", procs, now=1000.0)
    got = node_state.read(path, now=1004.0)
    assert got is not None and (got.node, got.age_s, got.processes) == ("nodo1", 4.0, procs)
    assert node_state.read(path, now=1000.0 + node_state.MAX_AGE_S + 1) is None   # the supervisor went silent
    for bad in ("{", "[]", json.dumps({"at": "x", "processes": []}), json.dumps({"at": 1e12, "processes": [{}]})):
        path.write_text(bad, encoding="utf-8")
        assert node_state.read(path) is None


async def _wait_for(path: Path, check: object, timeout_s: float = 20.0) -> node_state.NodeState:
    deadline = time.monotonic() + timeout_s
    while True:
        state = node_state.read(path)
        if state is not None and check(state):  # type: ignore[operator]
            return state
        assert time.monotonic() < deadline, f"state never matched: {state}"
        await asyncio.sleep(0.2)


async def test_supervisor_reports_real_children_up_down_and_restarted(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    sup = Supervisor(settings, argparse.Namespace(workers_only=False))

    async def alive() -> bool:
        return True
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    for name in ("worker-0", "rasa"):
        sup._supervise(ChildSpec(name, sleeper, alive, 10.0))
    sup._spawn(sup._report_state(), "node-state")
    path = node_state.state_file(settings.path(settings.data_dir))
    try:
        state = await _wait_for(path, lambda s: [p.up for p in s.processes] == [True, True])
        assert [p.name for p in state.processes] == ["rasa", "worker-0"] and state.node == settings.node_name
        proc = sup.children["worker-0"].proc
        assert proc is not None
        proc.kill()                                        # a worker dies: down until restarted, then up again
        down = await _wait_for(path, lambda s: not {p.name: p for p in s.processes}["worker-0"].up)
        assert {p.name: p.up for p in down.processes}["rasa"] is True
        back = await _wait_for(path, lambda s: all(p.up for p in s.processes))
        assert {p.name: p.restarts for p in back.processes} == {"rasa": 0, "worker-0": 1}
    finally:
        sup._stopping.set()
        await sup._stop_children(list(sup.children.values()), 5.0)
        await asyncio.gather(*sup._tasks, return_exceptions=True)
    assert node_state.read(path) is None                   # stopped: the file is gone, the state unknown


@pytest.fixture
async def site(sqlite_database: str, tmp_path: Path) -> AsyncIterator[tuple[str, CaseService, Path]]:
    settings = _settings(tmp_path)
    svc = CaseService.from_url(sqlite_database, redis_url=REDIS_URL, ratelimit_prefix=f"live-{uuid.uuid4().hex}")
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    runner = web.AppRunner(build_app(settings, svc, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield (f"http://127.0.0.1:{runner.addresses[0][1]}", svc,
           node_state.state_file(settings.path(settings.data_dir)))
    await runner.cleanup()
    await asyncio.to_thread(svc.close)


def _write(path: Path, **up: bool) -> None:
    node_state.write(path, "nodo1", [node_state.ProcessState(n.replace("_", "-"), u, 0 if u else 2, 5.0 if u else None)
                                     for n, u in sorted(up.items())])


@pytest.mark.browser
async def test_live_page_follows_processes_without_reload(site: tuple[str, CaseService, Path],
                                                          artifacts_dir: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    base, svc, path = site
    name = f"super{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(svc.create_staff, name, "clave-de-supervision", "supervisor", "Supervisora")
    _write(path, worker_0=True, worker_1=True, rasa=True)
    shots = artifacts_dir / "ops"
    shots.mkdir(exist_ok=True)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(locale="es-MX")).new_page()
            await page.goto(base + "/staff/login")
            await page.fill("#usuario", name)
            await page.fill("#contrasena", "clave-de-supervision")
            await page.click("button[type=submit]")
            await page.goto(base + "/supervision/en-vivo")
            rows = page.locator("#node-processes tbody tr")
            assert await rows.count() == 3
            assert "Todos los procesos de nodo1 están arriba" in await page.inner_text("#node-summary")
            # the API the page polls says the same
            api = await page.evaluate("fetch('/api/ops/live').then(r => r.json())")
            assert api["node"]["down"] == 0 and len(api["node"]["processes"]) == 3
            _write(path, worker_0=True, worker_1=False, rasa=True)          # a worker goes down
            await page.wait_for_selector('#node-processes tr[data-process="worker-1"][data-up="0"]', timeout=12000)
            assert "1 proceso(s) caído(s) en nodo1" in await page.inner_text("#node-summary")
            assert await page.inner_text('#node-processes tr[data-process="worker-1"] td.down') == "Caído"
            await page.screenshot(path=str(shots / "live_worker_down.png"), full_page=True)
            path.unlink()                                                   # the supervisor stops reporting
            await page.wait_for_selector('#node-summary:has-text("estado desconocido")', timeout=12000)
            assert await rows.count() == 0
        finally:
            await browser.close()


async def test_live_api_role_and_unknown_state(site: tuple[str, CaseService, Path]) -> None:
    import aiohttp
    base, svc, path = site
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/ops/live", allow_redirects=False) as r:
            assert r.status in (302, 303, 401, 403)                        # no session: no node state
    assert path.exists() is False
