"""Headless Chromium against the agent console while a real SIP call runs.

The portal (pjsua2 edge + engine + recorder on SQLite) answers a sipp caller that keys 3, its folio and #, then 0:
the call is queued for the agents, the REFER goes out, the caller's side answers 486, the portal offers a callback.
Meanwhile an agent signed in to the real web app takes the call from the queue: the pop-up shows the case of that
folio and that call, and the turns the portal commits after the take (the caller's key 1 and the portal's answer)
appear in the open console over the websocket."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import Settings
from tests.case_bridge.conftest import TEST_TRAMITES
from tests.escalation.conftest import REDIS_URL, unique
from tests.escalation.portal import Portal, portal_settings
from tests.escalation.scenario_parts import PORTAL_BYE, play, refer_block
from tests.escalation.sippkit import dtmf_timeline, start_sipp
from tests.sip.harness import free_udp_port
from veratur.webapp import build_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]
playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]
PASSWORD = "contraseña-larga"


@pytest.fixture
async def service(esc_sqlite_database: str) -> AsyncIterator[CaseService]:
    svc = CaseService.from_url(esc_sqlite_database, redis_url=REDIS_URL, ratelimit_prefix=unique("esc-ui-"))
    svc.upsert_tramites(TEST_TRAMITES)
    yield svc
    svc.close()


@pytest.fixture
async def site(service: CaseService) -> AsyncIterator[str]:
    runner = web.AppRunner(build_app(Settings(), service, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_console_streams_a_live_call_and_pops_its_case(site: str, service: CaseService, tmp_path: Path,
                                                            artifacts_dir: Path) -> None:
    shots = artifacts_dir / "escalation"
    shots.mkdir(exist_ok=True)
    folio = service.open_case("licencia_conducir", "web",
                              citizen=CitizenInfo("Carmen Ruiz Díaz", phone="2281234567")).case.folio
    agent = unique("agente")
    service.create_staff(agent, PASSWORD, "agent", "Agente de prueba")
    agent_port = free_udp_port()
    settings = portal_settings(tmp_path, f"sqlite:///{service.engine.url.database}",
                               agent_uri=f"sip:agentes@127.0.0.1:{agent_port}", transfer_timeout_s=3.0,
                               no_input_timeout_s=15.0)
    portal = await Portal.start(settings, service)
    browser = None
    caller = None
    try:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(f"{site}/agente")
            await page.fill("#usuario", agent)
            await page.fill("#contrasena", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{site}/agente")

            keys = dtmf_timeline(tmp_path / "keys.pcap", [(1.0, "3"), (3.5, folio + "#"), (9.0, "0")])
            answer, _, _ = dtmf_timeline(tmp_path / "answer.pcap", [(0.0, "1")], first_seq=keys[1],
                                         first_ts=keys[2])
            middle = refer_block(folio, "486 Busy Here") + play(answer, 9000)
            caller = await start_sipp("uac_caller", tmp_path, {
                "KEYS_PCAP": str(keys[0]), "MIDDLE": middle, "END": PORTAL_BYE.replace("@BYE_TIMEOUT_MS@", "60000"),
                "REFERENCES": '<Reference variables="case,uui,rt"/>'}, target=f"127.0.0.1:{portal.port}",
                timeout_s=90)

            row = page.locator("#queue-rows tr", has_text=folio)
            await row.wait_for(timeout=30000)                 # queued when the caller keyed 0
            await page.screenshot(path=str(shots / "01-queue.png"), full_page=True)
            await row.locator("button.take").click()
            summary = page.locator("#case-summary")
            await summary.wait_for()
            assert await summary.get_attribute("data-folio") == folio
            assert "Carmen Ruiz Díaz" in await page.inner_text("#case-fields")
            transcript = page.locator("#transcript")
            await transcript.locator("li", has_text="[DTMF 0]").wait_for()
            taken_turns = await transcript.locator("li").count()
            await page.screenshot(path=str(shots / "02-taken.png"), full_page=True)

            # committed by the portal after the take: streamed into the open console
            await transcript.locator("li.live", has_text="devuelva la llamada").first.wait_for(timeout=30000)
            await transcript.locator("li.live", has_text="[DTMF 1]").wait_for(timeout=30000)
            await transcript.locator("li.live", has_text="Un agente le llamará").wait_for(timeout=30000)
            await page.screenshot(path=str(shots / "03-live-transcript.png"), full_page=True)
            assert await transcript.locator("li").count() > taken_turns

            code, out = await caller.wait(90)
            assert code == 0, out
            call_id = caller.logged_value("CALL_ID")
            assert call_id and await summary.get_attribute("data-call") == call_id    # the pop-up is this call
            await portal.wait_calls_done()
            await page.locator("#live-badge").wait_for(state="hidden", timeout=10000)

            ids = [int(x) for x in await transcript.locator("li").evaluate_all(
                "els => els.map(e => e.getAttribute('data-turn'))")]
            stored = [t.id for t in service.transcript(call_id)]
            assert ids == stored                                 # every committed turn, once, in order

            await page.fill("#note-text", "Pidió que le llamen por la tarde.")
            await page.click("#note-form button")
            await page.locator("#notes li", has_text="por la tarde").wait_for()
            await page.select_option("#disposition", "callback_done")
            await page.select_option("#case-status", "in_review")
            await page.click("#close-form button")
            await page.locator("#case-pane").wait_for(state="hidden")
            await page.screenshot(path=str(shots / "04-closed.png"), full_page=True)
            case = service.find_case(folio)
            assert case is not None and case.status == "in_review"
            center = [i for i in case.interactions if i.channel == "call_center"]
            assert center and center[-1].outcome == "callback_done" and "por la tarde" in center[-1].summary
            record = service.get_call(call_id)
            assert record is not None and record.disposition == "transfer_failed"
    finally:
        if caller is not None:
            caller.kill()
        if browser is not None:
            await browser.close()
        await portal.stop()
