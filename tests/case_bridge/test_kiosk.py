"""The kiosk channel end to end in headless Chromium: an enrolled kiosk continues a case opened on the phone path,
books an office visit and prints its receipt to PDF; the idle timer clears the screen; unenrolled and revoked
devices are refused.

The phone half goes through the code a call uses (`CaseRecorder` for the call and its turns, `open_case` with the
call id as the keypad dialogue's action does); the SIP call in front of it is exercised by the engine's tests.
One server and one browser serve the whole module (the kiosk's idle countdown is fast-forwarded with
Playwright's clock, not waited for).
"""
from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yarl
from aiohttp import web

from case_bridge.folio import new_folio
from case_bridge.ratelimit import CLIENT_MAX_FAILURES
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo, TramiteInfo
from case_bridge.web.kiosk import KIOSK_COOKIE
from foundation.config import load_settings
from ivr.call.leg import CallInfo
from ivr.call.recorder import CaseRecorder
from veratur.webapp import build_app

from .conftest import REDIS_URL, TEST_TRAMITES

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
playwright_api = pytest.importorskip("playwright.async_api")
pypdf = pytest.importorskip("pypdf")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]
IDLE_S = 20


class Site:
    def __init__(self, base: str, svc: CaseService, browser: Any) -> None:
        self.base, self.svc, self.browser = base, svc, browser


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(sqlite_database: str) -> AsyncIterator[Site]:
    svc = CaseService.from_url(sqlite_database, redis_url=REDIS_URL, ratelimit_prefix=f"kiosk-{uuid.uuid4().hex}")
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    settings = load_settings()
    settings = settings.model_copy(update={"web": settings.web.model_copy(update={"kiosk_idle_s": IDLE_S})})
    runner = web.AppRunner(build_app(settings, svc, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield Site(f"http://127.0.0.1:{runner.addresses[0][1]}", svc, browser)
        await browser.close()
    await runner.cleanup()
    await asyncio.to_thread(svc.close)


async def _phone_case(svc: CaseService, tmp_path: Path) -> tuple[str, str]:
    """A case opened on a recorded call, with a PIN that cannot be confused with another number on the receipt."""
    recorder = CaseRecorder(svc, data_dir=tmp_path, name="kiosk")
    await recorder.start()
    try:
        while True:
            call_id = f"{uuid.uuid4().hex}@127.0.0.1"
            await recorder.call_started(CallInfo(call_id, "2285550199", "veratur", "w0"))
            await recorder.add_turn(call_id, "caller", "quiero tramitar mi licencia", "tramite_licencia", 0.9)
            opened = await asyncio.to_thread(
                svc.open_case, "licencia_conducir", "phone", call_id=call_id, idempotency_key=f"phone:{call_id}",
                citizen=CitizenInfo("Rosa Luna Paz", curp="LUPR850505MVZNZS02", phone="2285550199"),
                summary="pidió su licencia de conducir", missing=["Comprobante de domicilio"])
            await recorder.link_case(call_id, opened.case.folio)
            await recorder.call_ended(call_id, "completed")
            folio, pin = opened.case.folio, opened.pin
            if pin not in (folio[:4], folio[4:]) and not pin.startswith("20"):
                return folio, pin
    finally:
        await recorder.stop()


async def _enrolled_context(site: Site, name: str) -> tuple[Any, Any]:
    """A kiosk enrolled by the service and stored on a fresh browser context through /kiosco/alta."""
    kiosk, token = await asyncio.to_thread(site.svc.enrol_kiosk, name, actor="admin.test")
    context = await site.browser.new_context(viewport={"width": 1280, "height": 800}, locale="es-MX",
                                             has_touch=True)
    page = await context.new_page()
    await page.goto(site.base + "/kiosco/alta")
    await page.get_by_label("Clave del quiosco").fill(token)
    await page.get_by_role("button", name="Registrar").click()
    await page.wait_for_url(site.base + "/kiosco")
    return kiosk, page


async def _tap(page: Any, digits: str) -> None:
    for d in digits:
        await page.locator(f'.keypad [data-key="{d}"]').tap()


async def test_enrolled_kiosk_continues_phone_case_books_and_prints(site: Site, tmp_path: Path,
                                                                     artifacts_dir: Path) -> None:
    folio, pin = await _phone_case(site.svc, tmp_path)
    kiosk, page = await _enrolled_context(site, "Plaza Américas Xalapa")
    shots = artifacts_dir / "case_bridge"
    shots.mkdir(exist_ok=True)

    # the keypad alone: the folio field fills, then the PIN field takes the next digits
    await _tap(page, folio + pin)
    assert await page.locator("#folio").input_value() == folio
    assert await page.locator("#pin").input_value() == pin
    for box in [await b.bounding_box() for b in await page.locator("button").all()]:
        assert box and box["height"] >= 44 and box["width"] >= 44, box
    await page.screenshot(path=str(shots / "kiosk_home.png"))
    await page.get_by_role("button", name="Consultar").tap()
    await page.wait_for_url(site.base + "/kiosco/caso")
    assert "Llamada telefónica" in await page.locator(".timeline").inner_text()
    assert "Comprobante de domicilio" in await page.locator("#falta").inner_text()

    # book the office visit with the large tiles
    await page.get_by_label("Delegación Veracruz").check()
    await page.locator(".tile", has_text=":00").nth(2).tap()
    await page.get_by_role("button", name="Agendar cita").tap()
    await page.wait_for_url(re.compile(r".*/kiosco/caso\?aviso=cita"))
    assert "Delegación Veracruz" in await page.locator("#cita").inner_text()
    await page.screenshot(path=str(shots / "kiosk_case.png"), full_page=True)

    # the missing document's number, on the keypad
    await page.locator("#dato_0").tap()
    await _tap(page, "4455667788")
    await page.get_by_role("button", name="Enviar datos").tap()
    await page.wait_for_url(re.compile(r".*/kiosco/caso\?aviso=datos"))
    assert "No falta nada" in await page.locator("#falta-t + *").inner_text()

    # the receipt, printed to PDF by headless Chromium with the print stylesheet
    await page.get_by_role("link", name="Imprimir comprobante").tap()
    await page.wait_for_url(site.base + "/kiosco/recibo")
    await page.reload()                                        # a reload is not a second receipt
    await page.emulate_media(media="print")
    pdf = await page.pdf(format="A4")
    (shots / "kiosk_receipt.pdf").write_bytes(pdf)
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    assert f"{folio[:4]}-{folio[4:]}" in text
    assert pin not in re.findall(r"\d+", text), "the PIN is on the receipt"
    assert "LUPR850505MVZNZS02" not in text and "Delegación Veracruz" in text and "Qué sigue" in text
    assert "Entregó datos: Comprobante de domicilio" in text
    assert "Imprimir" not in text and "segundos" not in text      # buttons and countdown are not printed

    # one timeline: the call, the kiosk visit (naming the kiosk) and an office clerk's follow-up, on the clerk's page
    clerk = f"ventanilla{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(site.svc.create_staff, clerk, "clave-de-oficina", "clerk", "Ventanilla 3")
    office = await site.browser.new_context(locale="es-MX")
    desk = await office.new_page()
    await desk.goto(site.base + f"/staff/login?next=/oficina/caso/{folio}")
    await desk.get_by_label("Usuario").fill(clerk)
    await desk.get_by_label("Contraseña").fill("clave-de-oficina")
    await desk.get_by_role("button", name="Entrar").click()
    await desk.wait_for_url(site.base + f"/oficina/caso/{folio}")
    await desk.get_by_label("Resumen de la visita").fill("entregó su comprobante de domicilio")
    await desk.get_by_role("button", name="Registrar visita").click()
    await desk.wait_for_url(re.compile(r".*aviso=visita"))
    seen = await desk.locator(".timeline").inner_text()
    assert seen.index("Llamada telefónica") < seen.index("Quiosco") < seen.index("Visita a oficina"), seen
    await office.close()
    # ... and on the supervisor's dashboard, the case counts as continued at a kiosk
    boss = f"supervisor{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(site.svc.create_staff, boss, "clave-de-supervision", "supervisor", "Supervisión")
    ops = await site.browser.new_context(locale="es-MX")
    board_page = await ops.new_page()
    await board_page.goto(site.base + "/staff/login?next=/supervision")
    await board_page.get_by_label("Usuario").fill(boss)
    await board_page.get_by_label("Contraseña").fill("clave-de-supervision")
    await board_page.get_by_role("button", name="Entrar").click()
    await board_page.wait_for_url(site.base + "/supervision")
    assert "Quiosco" in await board_page.locator("#ch-cross").inner_text()
    await ops.close()
    case = await asyncio.to_thread(site.svc.find_case, folio)
    assert case is not None
    channels = [i.channel for i in case.interactions]
    assert channels[0] == "phone" and "kiosk" in channels and channels[-1] == "office", channels
    kiosk_items = [i for i in case.interactions if i.channel == "kiosk"]
    assert {i.outcome for i in kiosk_items} >= {"status_viewed", "appointment", "data_completed", "receipt_printed"}
    assert all(i.actor == kiosk.actor for i in kiosk_items), [i.actor for i in kiosk_items]
    assert [i.outcome for i in kiosk_items].count("receipt_printed") == 1
    now = datetime.now(UTC)
    board = await asyncio.to_thread(site.svc.dashboard, now - timedelta(hours=1), now + timedelta(minutes=1))
    assert board.cross_channel.continued.get("kiosk", 0) >= 1, board.cross_channel
    await page.context.close()


async def test_idle_timer_clears_screen_and_session(site: Site, tmp_path: Path) -> None:
    folio, pin = await _phone_case(site.svc, tmp_path)
    _kiosk, page = await _enrolled_context(site, "Oficina Centro")
    await page.clock.install()
    await page.reload()
    await _tap(page, folio + pin)
    await page.get_by_role("button", name="Consultar").tap()
    await page.wait_for_url(site.base + "/kiosco/caso")
    assert await page.locator("#idle-s").inner_text() == str(IDLE_S)
    await page.clock.run_for((IDLE_S - 5) * 1000)
    assert await page.locator("#idle-s").inner_text() == "5"           # the visible countdown
    await page.locator("h1").tap()                                      # a touch restarts it
    assert await page.locator("#idle-s").inner_text() == str(IDLE_S)
    await page.clock.run_for((IDLE_S + 1) * 1000)
    await page.wait_for_url(site.base + "/kiosco?fin=1")
    assert folio[:4] not in await page.content()
    await page.goto(site.base + "/kiosco/caso")                         # the session went with the screen
    assert page.url == site.base + "/kiosco?fin=1"
    await page.context.close()


async def test_unenrolled_and_revoked_devices_are_refused(site: Site) -> None:
    kiosk, token = await asyncio.to_thread(site.svc.enrol_kiosk, "Quiosco para baja")
    async with aiohttp.ClientSession() as http:
        async with http.get(site.base + "/kiosco") as r:
            assert r.status == 403 and "no está registrado" in await r.text()
        async with http.get(site.base + "/kiosco/caso", cookies={KIOSK_COOKIE: "x" * 43}) as r:
            assert r.status == 403
        async with http.get(site.base + "/kiosco", cookies={KIOSK_COOKIE: token}) as r:
            assert r.status == 200 and "Consulte su trámite" in await r.text()
        await asyncio.to_thread(site.svc.revoke_kiosk, kiosk.id)
        async with http.get(site.base + "/kiosco", cookies={KIOSK_COOKIE: token}) as r:
            assert r.status == 403 and "dado de baja" in await r.text()
        async with http.post(site.base + "/kiosco/consulta", cookies={KIOSK_COOKIE: token},
                             data={"folio": "12345678", "pin": "1234"}) as r:
            assert r.status == 403      # refused (CSRF or kiosk check): never a lookup


async def _kiosk_client(site: Site, token: str) -> tuple[aiohttp.ClientSession, str]:
    """An HTTP client holding a kiosk's cookie, and the CSRF token of its session."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    http.cookie_jar.update_cookies({KIOSK_COOKIE: token}, response_url=yarl.URL(site.base + "/kiosco"))
    async with http.get(site.base + "/kiosco") as r:
        match = re.search(r'name="_csrf" value="([^"]+)"', await r.text())
    assert match, "no CSRF token on the kiosk page"
    return http, match.group(1)


async def test_lockout_is_per_kiosk(site: Site, tmp_path: Path) -> None:
    """Someone walking through folios on one kiosk is limited on that kiosk only: another kiosk still serves."""
    folio, pin = await _phone_case(site.svc, tmp_path)
    kiosk_a, token_a = await asyncio.to_thread(site.svc.enrol_kiosk, "Quiosco A")
    kiosk_b, token_b = await asyncio.to_thread(site.svc.enrol_kiosk, "Quiosco B")
    http_a, csrf_a = await _kiosk_client(site, token_a)
    http_b, csrf_b = await _kiosk_client(site, token_b)
    try:
        statuses = []
        for _ in range(CLIENT_MAX_FAILURES):
            async with http_a.post(site.base + "/kiosco/consulta",
                                   data={"_csrf": csrf_a, "folio": new_folio(), "pin": "0000"}) as r:
                statuses.append(r.status)
        assert statuses[:-1] == [401] * (CLIENT_MAX_FAILURES - 1) and statuses[-1] in (401, 429), statuses
        # the failures are counted on kiosk A's own client key (slowed or locked there), none on kiosk B's
        count_a, count_b = await asyncio.to_thread(site.svc.limiter.check_many,
                                                   [f"client:{kiosk_a.actor}", f"client:{kiosk_b.actor}"])
        assert count_a.locked or count_a.failures >= CLIENT_MAX_FAILURES, count_a
        assert not count_b.locked and count_b.failures == 0, count_b
        async with http_b.post(site.base + "/kiosco/consulta", allow_redirects=False,
                               data={"_csrf": csrf_b, "folio": folio, "pin": pin}) as r:
            assert r.status == 303 and r.headers["Location"] == "/kiosco/caso"   # the other kiosk still works
    finally:
        await http_a.close()
        await http_b.close()


async def test_a_trámite_the_catalog_lets_finish_at_a_kiosk_is_finished_there(site: Site) -> None:
    """Nothing missing and the catalog allows the kiosk: the citizen finishes it there (recorded as the kiosk's);
    a trámite that finishes only at an office is refused with a message."""
    await asyncio.to_thread(site.svc.upsert_tramites, [TramiteInfo(
        "constancia_quiosco", "Constancia de no adeudo", "Finanzas", ("phone", "web", "kiosk"),
        ("web", "office", "kiosk"), (), ())])
    here = await asyncio.to_thread(site.svc.open_case, "constancia_quiosco", "phone",
                                   citizen=CitizenInfo("Rosa Luna Paz"))
    office_only = await asyncio.to_thread(site.svc.open_case, "licencia_conducir", "phone",
                                          citizen=CitizenInfo("Rosa Luna Paz"), missing=["Comprobante de domicilio"])
    kiosk, token = await asyncio.to_thread(site.svc.enrol_kiosk, "Quiosco para terminar")
    for opened, finishable in ((here, True), (office_only, False)):
        http, csrf = await _kiosk_client(site, token)
        try:
            async with http.post(site.base + "/kiosco/consulta",
                                 data={"_csrf": csrf, "folio": opened.case.folio, "pin": opened.pin}) as r:
                assert r.status == 200 and ("Terminar mi trámite" in await r.text()) is finishable
            async with http.post(site.base + "/kiosco/terminar", data={"_csrf": csrf}, allow_redirects=False) as r:
                assert r.status == (303 if finishable else 400), await r.text()
        finally:
            await http.close()
    done = await asyncio.to_thread(site.svc.find_case, here.case.folio)
    assert done is not None and done.status == "resolved"
    assert [(i.channel, i.outcome, i.actor) for i in done.interactions if i.outcome == "finished_at_kiosk"] == [
        ("kiosk", "finished_at_kiosk", kiosk.actor)]
    still = await asyncio.to_thread(site.svc.find_case, office_only.case.folio)
    assert still is not None and still.status != "resolved"
