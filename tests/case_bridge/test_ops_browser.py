"""Headless Chromium: a supervisor signs in, reads the dashboard, changes the period, opens a call from the search
and reads its transcript. Every chart must have rendered data points; the day's callbacks are their own section
(attempts by outcome in a table) and not in the calls received; screenshots go to test-artifacts/ops/."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
from aiohttp import web

from case_bridge.service import CaseService
from case_bridge.views import LOCAL_TZ
from foundation.config import load_settings
from testkit.call_records import seed_known_calls
from veratur.webapp import build_app

from .conftest import REDIS_URL, TEST_TRAMITES

pytestmark = [pytest.mark.browser]
playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]
CHARTS_WITH_DATA = ("ch-per-day", "ch-per-hour", "ch-outcomes", "ch-reasons", "ch-intents", "ch-tramites",
                    "ch-cities", "ch-cross", "ch-latency", "ch-confidence", "ch-lost", "ch-callbacks")


@pytest.fixture
async def site(sqlite_database: str) -> AsyncIterator[tuple[str, CaseService]]:
    svc = CaseService.from_url(sqlite_database, redis_url=REDIS_URL, ratelimit_prefix=f"ops-{uuid.uuid4().hex}")
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    runner = web.AppRunner(build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", svc
    await runner.cleanup()
    await asyncio.to_thread(svc.close)


async def test_supervisor_reads_dashboard_and_a_call(site: tuple[str, CaseService], artifacts_dir: Path) -> None:
    base, svc = site
    shots = artifacts_dir / "ops"
    shots.mkdir(exist_ok=True)
    known = await asyncio.to_thread(lambda: seed_known_calls(svc, date(2022, 6, 6), callbacks=True))
    day = known.since.astimezone(LOCAL_TZ).date().isoformat()
    name = f"super{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(svc.create_staff, name, "clave-de-supervision", "supervisor", "Supervisora")

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-MX")).new_page()
            await page.goto(base + "/staff/login")
            await page.fill("#usuario", name)
            await page.fill("#contrasena", "clave-de-supervision")
            await page.click("button[type=submit]")
            await page.wait_for_url("**/supervision")

            # the default period (last 7 days) holds none of the seeded calls: change it
            await page.fill("#desde", day)
            await page.fill("#hasta", day)
            await page.click("form.period button[type=submit]")
            await page.wait_for_url(f"**/supervision?desde={day}&hasta={day}")
            assert await page.text_content("#kpi-calls") == "4"              # received only: 3 callbacks too
            assert await page.text_content("#kpi-containment") == "50.0 %"
            outbound = page.get_by_role("region", name="Llamadas salientes: devoluciones de llamada")
            assert await outbound.locator("#kpi-out-attempts").text_content() == "6"
            assert await outbound.locator("#kpi-out-calls").text_content() == "3"
            assert await outbound.locator("#kpi-out-aht").text_content() == "1 min 20 s"
            table = outbound.get_by_role("table", name="Resultado de cada intento de devolución de llamada")
            cells = await table.locator("tbody tr").evaluate_all(
                "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))")
            assert cells == [[label, "1", "16.7 %"] for label in (
                "Contestó", "Ocupado", "No contestó", "Contestó sin responder (buzón o silencio)",
                "Pidió no recibir llamadas", "Falló")]
            assert await table.get_by_role("rowheader").count() == 6
            for chart in CHARTS_WITH_DATA:
                box = page.locator(f"#{chart} svg.chart")
                assert await box.count() == 1, chart
                points = await box.locator(".point").count()
                bbox = await box.bounding_box()
                assert points > 0 and bbox is not None and bbox["width"] > 100 and bbox["height"] > 30, chart
            assert await page.locator("#ch-lost svg .point").count() == 2
            assert "******4567" in (await page.text_content("#ch-lost") or "")
            await page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

            await page.click("nav.ops >> text=Llamadas")
            await page.fill("#desde", day)
            await page.fill("#hasta", day)
            await page.select_option("#direccion", "saliente")
            await page.click("form.search button[type=submit]")
            assert await page.locator("#calls tbody tr").count() == 3
            assert await page.locator("#calls tbody tr", has_text="Saliente").count() == 3
            await page.select_option("#direccion", "")
            await page.fill("#texto", "saber de mi")
            await page.click("form.search button[type=submit]")
            rows = page.locator("#calls tbody tr")
            assert await rows.count() == 1
            assert "******0101" in (await rows.first.text_content() or "")
            await page.screenshot(path=str(shots / "search.png"), full_page=True)
            await rows.first.locator("a").click()
            await page.wait_for_selector("#transcript")
            transcript = await page.text_content("#transcript") or ""
            assert "quiero saber de mi trámite" in transcript and "consultar_estado" in transcript
            assert "Resuelta" in (await page.text_content("#call-facts") or "")
            await page.screenshot(path=str(shots / "call.png"), full_page=True)
        finally:
            await browser.close()
