"""WCAG 2.1 AA in Chromium: axe-core (npm, installed by scripts/setup.sh into testkit/node; never downloaded at test
time) injected by Playwright into every page in its main states — portal, kiosk, staff login, clerk, agent,
supervisor, admin — with zero serious or critical violations asserted; a keyboard-only walk through the portal's
main flow (look up, complete data, book); screenshots at 360 px width and at 200 % zoom in test-artifacts/a11y.
One server and one browser serve the whole module."""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from case_bridge.web.kiosk import KIOSK_COOKIE
from foundation.config import load_settings
from testkit.call_records import seed_known_calls
from veratur.webapp import build_app

from .conftest import REDIS_URL, TEST_TRAMITES

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
playwright_api = pytest.importorskip("playwright.async_api")

AXE = Path(__file__).resolve().parents[2] / "testkit" / "node" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PASSWORD = "clave-de-prueba-1"
DASHBOARD_DAY = "2021-09-06"        # seeded with testkit.call_records (callbacks too); a day no other test seeds

if not AXE.exists():
    pytest.skip(f"axe-core is not installed at {AXE}: run scripts/setup.sh (npm install --prefix testkit/node)",
                allow_module_level=True)


class Site:
    def __init__(self, base: str, svc: CaseService, browser: Any, folio: str, pin: str) -> None:
        self.base, self.svc, self.browser, self.folio, self.pin = base, svc, browser, folio, pin
        self.users: dict[str, str] = {}
        self.call_id = ""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(sqlite_database: str) -> AsyncIterator[Site]:
    svc = CaseService.from_url(sqlite_database, redis_url=REDIS_URL, ratelimit_prefix=f"a11y-{uuid.uuid4().hex}")
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    opened = await asyncio.to_thread(
        svc.open_case, "licencia_conducir", "phone", summary="pidió su licencia de conducir",
        citizen=CitizenInfo("Elena Mora Gil", curp="MOGE800101MVZRLL01", phone="2285550123"),
        missing=["Comprobante de domicilio"])
    # a call on the case waiting for an agent: the console's queue and the supervisor's call page have content
    call_id = f"{uuid.uuid4().hex}@127.0.0.1"
    await asyncio.to_thread(svc.link_call, call_id, "2285550123", called="veratur", node="a11y")
    await asyncio.to_thread(svc.add_turn, call_id, "caller", "quiero hablar con una persona", "agent_request", 0.9)
    await asyncio.to_thread(svc.link_call_case, call_id, opened.case.folio, summary="pidió un agente")
    await asyncio.to_thread(svc.escalate, call_id, reason="caller_request", target="sip:agentes@127.0.0.1")
    # a day of calls with callbacks: the dashboard's every section, the outbound outcomes table included
    await asyncio.to_thread(lambda: seed_known_calls(svc, date.fromisoformat(DASHBOARD_DAY), callbacks=True))
    runner = web.AppRunner(build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        s = Site(f"http://127.0.0.1:{runner.addresses[0][1]}", svc, browser, opened.case.folio, opened.pin)
        s.call_id = call_id
        for role in ("clerk", "agent", "supervisor", "admin"):
            name = f"{role}{uuid.uuid4().hex[:6]}"
            await asyncio.to_thread(svc.create_staff, name, PASSWORD, role, f"Persona {role}")
            s.users[role] = name
        yield s
        await browser.close()
    await runner.cleanup()
    await asyncio.to_thread(svc.close)


async def serious_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical WCAG 2.1 A/AA violations of the page as it is now."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(content=AXE.read_text())
    result = await page.evaluate(
        "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})", WCAG_TAGS)
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


async def check(page: Any, label: str, found: dict[str, list[dict[str, Any]]]) -> None:
    assert await page.get_attribute("html", "lang") == "es", label
    found[f"{label} {page.url}"] = await serious_violations(page)


def assert_clean(found: dict[str, list[dict[str, Any]]]) -> None:
    bad = {k: v for k, v in found.items() if v}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)


async def _context(site: Site, **kw: Any) -> Any:
    # bypass_csp: the pages' CSP (script-src 'self') would refuse the injected axe script, as it should in prod
    return await site.browser.new_context(locale="es-MX", bypass_csp=True, **kw)


async def _sign_in(page: Any, site: Site, role: str) -> None:
    await page.goto(site.base + "/staff/login")
    await page.get_by_label("Usuario").fill(site.users[role])
    await page.get_by_label("Contraseña").fill(PASSWORD)
    await page.get_by_role("button", name="Entrar").click()
    await page.wait_for_load_state()


async def test_portal_and_kiosk_pages_have_no_serious_violations(site: Site) -> None:
    found: dict[str, list[dict[str, Any]]] = {}
    context = await _context(site, viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto(site.base + "/")
    await check(page, "portal home", found)
    await page.get_by_label("Folio (8 dígitos)").fill(site.folio)
    await page.get_by_label("PIN o últimos 4 caracteres de la CURP").fill("0000" if site.pin != "0000" else "1111")
    await page.get_by_role("button", name="Consultar").click()
    await check(page, "portal wrong PIN", found)
    assert await page.get_attribute("#pin", "aria-describedby") == "error"     # the error is tied to its field
    await page.get_by_label("PIN o últimos 4 caracteres de la CURP").fill(site.pin)
    await page.get_by_role("button", name="Consultar").click()
    await page.wait_for_url(site.base + "/caso")
    await check(page, "portal case", found)
    # the checker is not blind: an unlabelled field and low-contrast text are reported
    await page.evaluate("""() => { const m = document.querySelector('main');
        m.insertAdjacentHTML('beforeend', '<input id=bad><p style="color:#aaa;background:#fff">gris</p>'); }""")
    assert {v["id"] for v in await serious_violations(page)} >= {"label", "color-contrast"}
    await context.close()

    kiosk, token = await asyncio.to_thread(site.svc.enrol_kiosk, "Quiosco accesible")
    context = await _context(site, viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto(site.base + "/kiosco")
    await check(page, "kiosk refused", found)
    await page.goto(site.base + "/kiosco/alta")
    await check(page, "kiosk enrolment", found)
    await context.add_cookies([{"name": KIOSK_COOKIE, "value": token, "url": site.base + "/kiosco"}])
    await page.goto(site.base + "/kiosco")
    await check(page, "kiosk home", found)
    await page.locator("#folio").fill(site.folio)
    await page.locator("#pin").fill("9999" if site.pin != "9999" else "8888")
    await page.get_by_role("button", name="Consultar").click()
    await check(page, "kiosk wrong PIN", found)
    await page.locator("#pin").fill(site.pin)
    await page.get_by_role("button", name="Consultar").click()
    await page.wait_for_url(site.base + "/kiosco/caso")
    await check(page, "kiosk case", found)
    await page.goto(site.base + "/kiosco/recibo")
    await check(page, "kiosk receipt", found)
    await context.close()
    assert_clean(found)


STAFF_PAGES = {
    "clerk": ["/oficina", "/oficina/caso/{folio}", "/oficina/caso/{folio}/recibo"],
    "agent": ["/agente"],
    "supervisor": ["/supervision", f"/supervision?desde={DASHBOARD_DAY}&hasta={DASHBOARD_DAY}",
                   "/supervision/llamadas", "/supervision/en-vivo", "/supervision/llamadas/{call}"],
    "admin": ["/admin/flows", "/admin/flows/edit", "/admin/quioscos"],
}


@pytest.mark.parametrize("role", list(STAFF_PAGES))
async def test_staff_pages_have_no_serious_violations(site: Site, role: str) -> None:
    found: dict[str, list[dict[str, Any]]] = {}
    paths = [p.format(folio=site.folio, call=site.call_id) for p in STAFF_PAGES[role]]
    context = await _context(site, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    if role == "clerk":
        await page.goto(site.base + "/staff/login")
        await check(page, "staff login", found)
        await page.get_by_label("Usuario").fill(site.users[role])
        await page.get_by_label("Contraseña").fill("no-es-la-clave")
        await page.get_by_role("button", name="Entrar").click()
        await check(page, "staff login refused", found)
        assert await page.get_attribute("#contrasena", "aria-describedby") == "error"
    await _sign_in(page, site, role)
    for path in paths:
        await page.goto(site.base + path)
        await page.wait_for_load_state("load")
        assert page.url == site.base + path, f"{role} was sent to {page.url}"
        await check(page, role, found)
    if role == "clerk":         # a search that finds nothing: the message is tied to the field
        await page.goto(site.base + "/oficina")
        await page.locator("#q").fill("abc")
        await page.locator("#q").press("Enter")
        await page.wait_for_load_state("load")
        await check(page, "clerk search error", found)
        assert await page.get_attribute("#q", "aria-describedby") == "error"
    if role == "agent":         # the queue item, as the console's script lists it
        await page.goto(site.base + "/agente")
        await page.get_by_text("pidió un agente").first.wait_for(timeout=5000)
        await check(page, "agent queue", found)
    if role == "admin":         # enrol a kiosk: the page with the token shown once, then revoke it
        await page.get_by_label("Nombre o ubicación del quiosco").fill("Quiosco Plaza")
        await page.get_by_role("button", name="Dar de alta").click()
        token = await page.locator("#token").inner_text()
        assert len(token) >= 40
        await check(page, "admin kiosk enrolled", found)
        assert (await asyncio.to_thread(site.svc.kiosk_for_token, token)) is not None
        await page.get_by_role("button", name="Dar de baja el quiosco Quiosco Plaza").click()
        await page.wait_for_url(site.base + "/admin/quioscos")
        assert (await asyncio.to_thread(site.svc.kiosk_for_token, token)) is None
    await context.close()
    assert_clean(found)


async def test_portal_main_flow_by_keyboard_alone(site: Site, artifacts_dir: Path) -> None:
    shots = artifacts_dir / "a11y"
    shots.mkdir(exist_ok=True)
    opened = await asyncio.to_thread(site.svc.open_case, "licencia_conducir", "phone",
                                     missing=["Comprobante de domicilio"])
    context = await _context(site, viewport={"width": 360, "height": 740})
    page = await context.new_page()
    kb = page.keyboard

    async def tab_to(selector: str, limit: int = 30) -> None:
        for _ in range(limit):
            await kb.press("Tab")
            if await page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
                outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
                assert outline != "none", f"no visible focus on {selector}"
                return
        raise AssertionError(f"Tab never reached {selector}")

    await page.goto(site.base + "/")
    await page.screenshot(path=str(shots / "portal_home_360.png"), full_page=True)
    await tab_to("#folio")
    await kb.type(opened.case.folio)
    await tab_to("#pin")
    await kb.type(opened.pin)
    await kb.press("Enter")
    await page.wait_for_url(site.base + "/caso")
    await page.screenshot(path=str(shots / "portal_case_360.png"), full_page=True)
    await tab_to("#dato_0")
    await kb.type("CFE 123456789")
    await tab_to("form[action='/caso/datos'] button")
    await kb.press("Enter")
    await page.wait_for_url(site.base + "/caso?aviso=datos")
    await tab_to("#oficina")
    await kb.press("ArrowDown")                        # second office
    await tab_to("form[action='/caso/cita'] button")
    await kb.press("Enter")
    await page.wait_for_url(site.base + "/caso?aviso=cita")
    assert "Su cita quedó registrada" in await page.locator("[role=status]").inner_text()
    case = await asyncio.to_thread(site.svc.find_case, opened.case.folio)
    assert case is not None and case.appointment_office == "Delegación Veracruz" and not case.missing

    # 200 % zoom: the same content at twice the size, nothing cut off sideways (WCAG 1.4.4 / 1.4.10)
    zoomed = await _context(site, viewport={"width": 640, "height": 900}, device_scale_factor=1)
    zpage = await zoomed.new_page()
    await zpage.goto(site.base + "/")
    await zpage.evaluate("document.documentElement.style.zoom = '200%'")
    await zpage.screenshot(path=str(shots / "portal_home_zoom200.png"), full_page=True)
    overflow = await zpage.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{overflow} px cut off sideways at 200 %"
    await zoomed.close()
    await context.close()
