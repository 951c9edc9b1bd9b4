"""End to end in headless Chromium: a case opened on the phone path is continued on the portal and closed by a clerk.

The phone half goes through the same code a call uses (`CaseRecorder` for the call and its turns, `open_case`
with the call id as the Rasa action does); the real SIP call in front of it is exercised by the engine's tests.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import load_settings
from ivr.call.leg import CallInfo
from ivr.call.recorder import CaseRecorder
from veratur.webapp import build_app

from .conftest import REDIS_URL, TEST_TRAMITES

pytestmark = [pytest.mark.browser, pytest.mark.postgres]
playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]


@pytest.fixture
async def site(pg_database: str) -> AsyncIterator[tuple[str, CaseService]]:
    svc = CaseService.from_url(pg_database, redis_url=REDIS_URL,
                               ratelimit_prefix=f"browser-{uuid.uuid4().hex}")
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    runner = web.AppRunner(build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", svc
    await runner.cleanup()
    await asyncio.to_thread(svc.close)


async def test_phone_case_continued_on_web_closed_at_office(site: tuple[str, CaseService], tmp_path: Path,
                                                            artifacts_dir: Path) -> None:
    base, svc = site
    shots = artifacts_dir / "case_bridge"
    shots.mkdir(exist_ok=True)

    # -- the phone path: a call is recorded, the caller asks for a birth certificate, a case is opened --------
    recorder = CaseRecorder(svc, data_dir=tmp_path, name="browser")
    await recorder.start()
    call_id = f"{uuid.uuid4().hex}@127.0.0.1"
    await recorder.call_started(CallInfo(call_id, "2285550101", "veratur", "w0"))
    await recorder.add_turn(call_id, "portal", "Bienvenido. ¿En qué le puedo ayudar?")
    await recorder.add_turn(call_id, "caller", "quiero una copia de mi acta de nacimiento", "tramite_acta", 0.9)
    opened = await asyncio.to_thread(
        svc.open_case, "acta_nacimiento", "phone", call_id=call_id, idempotency_key=f"phone:{call_id}:acta",
        citizen=CitizenInfo("Carmen Ruiz Soto", curp="RUSC900202MVZZTR05", phone="2285550101"),
        summary="solicitó copia de acta de nacimiento")
    await recorder.link_case(call_id, opened.case.folio)
    await recorder.add_turn(call_id, "portal", f"Su folio es {opened.case.folio} y su PIN {opened.pin}.")
    await recorder.call_ended(call_id, "completed")
    await recorder.stop()
    folio, pin = opened.case.folio, opened.pin
    clerk_name = f"oficina{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(svc.create_staff, clerk_name, "clave-de-oficina", "clerk", "Ventanilla 3")

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # -- the citizen, on a phone-sized screen ---------------------------------------------------------
            phone = await browser.new_context(viewport={"width": 390, "height": 844}, locale="es-MX")
            page = await phone.new_page()
            await page.goto(base + "/")
            await page.get_by_label("Folio (8 dígitos)").fill(f"{folio[:4]} {folio[4:]}")
            await page.get_by_label("PIN o últimos 4 caracteres de la CURP").fill("0000" if pin != "0000" else "1111")
            await page.get_by_role("button", name="Consultar").click()
            await page.wait_for_selector("#error")
            assert "no coinciden" in await page.inner_text("#error")
            await page.screenshot(path=str(shots / "01_portal_wrong_pin.png"), full_page=True)

            await page.get_by_label("PIN o últimos 4 caracteres de la CURP").fill(pin)
            await page.get_by_role("button", name="Consultar").click()
            await page.wait_for_url(base + "/caso")
            timeline = await page.inner_text(".timeline")
            assert "Llamada telefónica" in timeline and "solicitó copia de acta de nacimiento" in timeline
            assert await page.inner_text("#estado") == "Faltan datos o documentos"
            await page.screenshot(path=str(shots / "02_portal_case_from_phone.png"), full_page=True)

            await page.get_by_label("CURP", exact=True).fill("RUSC900202MVZZTR05")
            await page.get_by_role("button", name="Enviar datos").click()
            await page.wait_for_selector("text=Recibimos sus datos.")
            assert await page.inner_text("#estado") == "En revisión"
            await page.get_by_label("Oficina", exact=True).select_option("Registro Civil Xalapa")
            await page.get_by_label("Hora", exact=True).select_option("10:00")
            await page.get_by_role("button", name="Agendar cita").click()
            await page.wait_for_selector("text=Su cita quedó registrada.")
            assert await page.inner_text("#estado") == "Cita programada"
            timeline = await page.inner_text(".timeline")
            assert "Portal web" in timeline and "agendó cita en Registro Civil Xalapa" in timeline
            await page.screenshot(path=str(shots / "03_portal_continued.png"), full_page=True)
            await phone.close()

            # -- the clerk at the office ----------------------------------------------------------------------
            desk = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-MX")
            page = await desk.new_page()
            await page.goto(base + "/oficina")
            await page.wait_for_url("**/staff/login**")
            await page.get_by_label("Usuario").fill(clerk_name)
            await page.get_by_label("Contraseña").fill("clave-de-oficina")
            await page.get_by_role("button", name="Entrar").click()
            await page.wait_for_url(base + "/oficina")
            await page.get_by_label("Folio o CURP").fill(f"{folio[:4]}-{folio[4:]}")
            await page.get_by_role("button", name="Buscar").click()
            await page.wait_for_url(f"{base}/oficina/caso/{folio}")
            timeline = await page.inner_text(".timeline")
            assert "Llamada telefónica" in timeline and "Portal web" in timeline
            await page.get_by_label("Resumen de la visita").fill("presentó identificación y recogió su copia")
            await page.get_by_role("button", name="Registrar visita").click()
            await page.wait_for_selector("text=Cambio registrado.")
            await page.get_by_label("Nuevo estado").select_option("closed")
            await page.get_by_label("Nota (obligatoria)").fill("Entregada la copia certificada")
            await page.get_by_role("button", name="Guardar estado").click()
            await page.wait_for_selector("#estado:has-text('Cerrado')")
            timeline = await page.inner_text(".timeline")
            for label in ("Llamada telefónica", "Portal web", "Visita a oficina"):
                assert label in timeline
            await page.screenshot(path=str(shots / "04_clerk_closed.png"), full_page=True)

            await page.goto(f"{base}/oficina/caso/{folio}/recibo")
            assert (await page.inner_text("#folio")) == f"{folio[:4]}-{folio[4:]}"
            await page.screenshot(path=str(shots / "05_receipt.png"), full_page=True)

            # the clerk can't reach the agent console or the admin pages
            for path in ("/agente", "/admin"):
                response = await page.goto(base + path)
                assert response is not None and response.status in (403, 404)
            await desk.close()
        finally:
            await browser.close()

    case = await asyncio.to_thread(svc.find_case, folio)
    assert case is not None and case.status == "closed"
    assert {i.channel for i in case.interactions} == {"phone", "web", "office"}
    assert [h.to_status for h in case.history][-1] == "closed"
    assert len(await asyncio.to_thread(svc.transcript, call_id)) == 3
