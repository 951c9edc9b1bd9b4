"""An agent's "Llamar de vuelta" end to end: the agent console in headless Chromium (Debian's /usr/bin/chromium)
against the real web app on PostgreSQL, the real dialer and conversation on a pjsua2 edge in the test process
(espeak-ng), a sipp phone as the citizen and a sipp phone as the agent's own extension (escalation.agent_uris).

- A caller who asked to be called back is on the queue; the agent double-clicks "Llamar de vuelta" and two more
  requests race in from the page: one job, requested_by the agent. The dialer calls the citizen, who keys 1; the
  agent's phone gets the bridged call with X-Veratur-Case and User-to-User; the console shows the call answered,
  "comunicado con el agente".
- The citizen's phone busy: the attempt is shown on the console ("ocupado", 1 attempt) with Reintentar and
  Cancelar; Reintentar queues it again after the number's pacing, Cancelar cancels it.
- Bad input: an agent with no phone of their own gets no button and a 400 from the API; a case without a phone
  number is refused on the page; a request without a session is 401; none of them queues a job.

Each test has its own database (the dialer leases the oldest due job of the whole database)."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from case_bridge.escalation import EscalationDesk
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import Settings, load_settings
from ivr.call.escalation import decode_uui
from ivr.callback_call import CallbackConversation
from ivr.dialer import Dialer
from testkit import sipp
from testkit.db import migrated_postgres
from testkit.outbound import outbound_worker
from testkit.ports import HOST, free_udp_port
from tests.case_bridge.test_staff_callbacks import CHROMIUM, CHROMIUM_ARGS, PASSWORD, login
from tests.engine.test_agent_callback import ANSWER_TALK_HANG_UP, agent_phone_script, citizen_phone_script
from veratur.webapp import build_app

from .conftest import REDIS_URL, TEST_TRAMITES

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.sip, pytest.mark.timeout(240)]
playwright_api = pytest.importorskip("playwright.async_api")

NUMBER = "2281234567"
BUSY_PHONE = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="citizen phone busy">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]busy
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""


class Site:
    def __init__(self, base: str, svc: CaseService, settings: Settings, agent: str, agent_port: int) -> None:
        self.base, self.svc, self.settings, self.agent, self.agent_port = base, svc, settings, agent, agent_port


@pytest.fixture
def own_pg_database() -> Iterator[str]:
    yield from migrated_postgres("cb_agentback")


@pytest.fixture
async def site(own_pg_database: str, tmp_path: Path) -> AsyncIterator[Site]:
    svc = CaseService.from_url(own_pg_database, redis_url=REDIS_URL, ratelimit_prefix=f"agb-{uuid.uuid4().hex}")
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    agent = f"age{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(svc.create_staff, agent, PASSWORD, "agent", "Agente 7")
    phone_port, agent_port = free_udp_port(), free_udp_port()
    base = load_settings()
    out = base.outbound
    settings = base.model_copy(update={
        "data_dir": tmp_path,
        "outbound": out.model_copy(update={
            "enabled": True, "allowed_prefixes": ["228"], "route": f"sip:{HOST}:{phone_port}",
            "caller_name": "el Gobierno del Estado",
            "callback": out.callback.model_copy(update={"quiet_start": "00:00", "quiet_end": "00:00"})}),
        "escalation": base.escalation.model_copy(update={
            "mode": "bridge", "transfer_timeout_s": 8.0, "agent_uris": {agent: f"sip:2001@{HOST}:{agent_port}"}})})
    runner = web.AppRunner(build_app(settings, svc, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield Site(f"http://127.0.0.1:{runner.addresses[0][1]}", svc, settings, agent, agent_port)
    await runner.cleanup()
    await asyncio.to_thread(svc.close)


async def queued_callback_request(svc: CaseService, *, case_phone: str | None = NUMBER,
                                  left: str | None = NUMBER) -> str:
    """A phone caller with a case who could not reach an agent and keyed 1 for a call back; the call is over."""
    call_id = f"agb-{uuid.uuid4().hex}"
    await asyncio.to_thread(svc.link_call, call_id, left or "anonymous")
    citizen = CitizenInfo("Luis Pérez", phone=case_phone) if case_phone else None
    folio = (await asyncio.to_thread(svc.open_case, "licencia_conducir", "phone", call_id=call_id,
                                     citizen=citizen)).case.folio
    await asyncio.to_thread(svc.add_turn, call_id, "caller", "[DTMF 0]", "agent", idempotency_key=f"{call_id}#1")
    desk = EscalationDesk(svc)
    await asyncio.to_thread(desk.enqueue, call_id, "caller_request", "sip:agentes@127.0.0.1:5090")
    await asyncio.to_thread(desk.record_result, call_id, False, 486, "busy")
    await asyncio.to_thread(desk.record_callback, call_id, True, left)
    await asyncio.to_thread(svc.close_call, call_id, "transfer_failed")
    return folio


async def dial(site: Site, tmp_path: Path, phones: list[sipp.SippRun]) -> str:
    """The real dialer places the one due job; its outcome once the call (and the bridge) is over."""
    try:
        async with outbound_worker(site.settings, tmp_path, "agentback/w0") as (edge, tts):
            talk = CallbackConversation(site.svc, tts, site.settings, first_input_s=10.0, key_timeout_s=4.0)
            dialer = Dialer(site.svc, site.settings, f"w-{uuid.uuid4().hex[:6]}", edge, talk, capacity=4,
                            active_calls=lambda: 0)
            [task] = await dialer.run_once()
            outcome = await asyncio.wait_for(task, 90)
            for phone in phones:
                code, text = await phone.wait(30)
                assert code == 0, text
    finally:
        for phone in phones:
            phone.kill()
    return outcome


POST_FROM_PAGE = """async ([path, times]) => {
  const csrf = document.getElementById('agent-console').getAttribute('data-csrf');
  const one = () => fetch(path, {method: 'POST', credentials: 'same-origin',
    headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json', 'Accept': 'application/json'},
    body: '{}'}).then(async r => [r.status, await r.text()]);
  return Promise.all(Array.from({length: times}, one));
}"""


async def test_call_back_bridges_the_citizen_to_the_agent_and_the_console_shows_it(
        site: Site, tmp_path: Path, artifacts_dir: Path) -> None:
    shots = artifacts_dir / "case_bridge"
    shots.mkdir(exist_ok=True)
    folio = await queued_callback_request(site.svc)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1280, "height": 1000}, locale="es-MX",
                                            timezone_id="America/Mexico_City")
            page = await ctx.new_page()
            await login(page, site.base, "/agente", site.agent)
            row = page.locator("#queue-rows tr", has_text=folio)
            await row.wait_for(timeout=15000)
            assert "Pidió que le devuelvan la llamada" in await row.inner_text()
            await row.locator("button.call-back").dblclick()
            item = page.locator("#callbacks li[data-reason=agent_return]")
            await item.wait_for(timeout=15000)
            assert await item.get_attribute("data-state") == "pending"
            text = await item.inner_text()
            assert "Devolución de llamada del agente" in text and site.agent in text and "***67" in text
            # two more clicks racing from another tab: the same job, not created again
            [esc] = [i for i in await asyncio.to_thread(EscalationDesk(site.svc).queue) if i.folio == folio]
            answers = await page.evaluate(POST_FROM_PAGE, [f"/api/agente/llamadas/{esc.id}/llamar-de-vuelta", 2])
            assert [status for status, _ in answers] == [200, 200], answers
            [job] = await asyncio.to_thread(site.svc.callbacks_for, folio)
            assert all(f'"id": {job.id}' in body or f'"id":{job.id}' in body for _, body in answers)
            assert (job.reason, job.requested_by, job.number, job.state) == ("agent_return", site.agent, NUMBER,
                                                                             "pending")
            await page.screenshot(path=str(shots / "agent_call_back_01_queued.png"), full_page=True)

            route = site.settings.outbound.route or ""
            citizen = await sipp.start_async(citizen_phone_script(tmp_path / "citizen.xml", tmp_path, "1"),
                                             cwd=tmp_path, port=int(route.rsplit(":", 1)[1]), timeout_s=90)
            agent_phone = await sipp.start_async(
                agent_phone_script(tmp_path / "agent.xml", folio, ANSWER_TALK_HANG_UP), cwd=tmp_path,
                port=site.agent_port, timeout_s=90)
            assert await dial(site, tmp_path, [citizen, agent_phone]) == "answered"
            uui = decode_uui(f"{agent_phone.logged_value('UUI')};encoding=hex;purpose=veratur-case")
            assert uui["case"] == folio                              # the agent's phone got the case

            done = page.locator("#callbacks li[data-reason=agent_return][data-state=done]")
            await done.wait_for(timeout=15000)                       # the console polls the case's callbacks
            text = await done.inner_text()
            assert "Atendida" in text and "comunicado con el agente" in text and "intentos 1" in text
            assert await done.locator("button").count() == 0         # nothing to retry
            await page.screenshot(path=str(shots / "agent_call_back_02_bridged.png"), full_page=True)
        finally:
            await browser.close()
    [job] = await asyncio.to_thread(site.svc.callbacks_for, folio)
    assert (job.state, job.attempts, job.detail) == ("done", 1, "connected to the agent")
    record = await asyncio.to_thread(site.svc.get_call, uui["call"])
    assert record is not None and record.disposition == "transferred" and record.folio == folio


async def test_busy_is_shown_and_the_agent_retries_or_cancels_and_bad_input_is_refused(
        site: Site, tmp_path: Path, artifacts_dir: Path) -> None:
    shots = artifacts_dir / "case_bridge"
    shots.mkdir(exist_ok=True)
    folio = await queued_callback_request(site.svc)
    no_phone = await queued_callback_request(site.svc, case_phone=None, left=None)
    other = f"otro{uuid.uuid4().hex[:6]}"                            # an agent with no phone of their own
    await asyncio.to_thread(site.svc.create_staff, other, PASSWORD, "agent", "Agente 9")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1280, "height": 1000}, locale="es-MX",
                                            timezone_id="America/Mexico_City")
            # not signed in: refused (the CSRF check answers first without a session's token; with the login
            # page's token, the role check), nothing queued
            anon = await ctx.new_page()
            await anon.goto(site.base + "/staff/login")
            [esc] = [i for i in await asyncio.to_thread(EscalationDesk(site.svc).queue) if i.folio == folio]
            resp = await anon.request.post(f"{site.base}/api/agente/llamadas/{esc.id}/llamar-de-vuelta")
            assert resp.status == 403, await resp.text()
            csrf = await anon.get_attribute("input[name=_csrf]", "value")
            resp = await anon.request.post(f"{site.base}/api/agente/llamadas/{esc.id}/llamar-de-vuelta",
                                           headers={"X-CSRF-Token": csrf or ""})
            assert resp.status == 401, await resp.text()
            await anon.close()

            # an agent without escalation.agent_uris: no button, and the API says why
            other_ctx = await browser.new_context(locale="es-MX", timezone_id="America/Mexico_City")
            page2 = await other_ctx.new_page()
            await login(page2, site.base, "/agente", other)
            await page2.locator("#queue-rows tr", has_text=folio).wait_for(timeout=15000)
            assert await page2.locator("#queue-rows button.call-back").count() == 0
            [(status, body)] = await page2.evaluate(
                POST_FROM_PAGE, [f"/api/agente/llamadas/{esc.id}/llamar-de-vuelta", 1])
            assert status == 400 and "no tiene un teléfono configurado" in body
            await other_ctx.close()
            assert await asyncio.to_thread(site.svc.callbacks_for, folio) == []

            page = await ctx.new_page()
            await login(page, site.base, "/agente", site.agent)
            # a case without any phone number: refused on the page, nothing queued
            bad = page.locator("#queue-rows tr", has_text=no_phone)
            await bad.wait_for(timeout=15000)
            await bad.locator("button.call-back").click()
            await page.locator("#console-error:not([hidden])").wait_for(timeout=10000)
            assert "no tiene número" in await page.inner_text("#console-error")
            assert await asyncio.to_thread(site.svc.callbacks_for, no_phone) == []

            row = page.locator("#queue-rows tr", has_text=folio)
            await row.locator("button.call-back").click()
            await page.locator("#callbacks li[data-reason=agent_return][data-state=pending]").wait_for(timeout=15000)
            route = site.settings.outbound.route or ""
            busy_script = tmp_path / "busy.xml"
            busy_script.write_text(BUSY_PHONE)
            phone = await sipp.start_async(busy_script, cwd=tmp_path, port=int(route.rsplit(":", 1)[1]),
                                           timeout_s=60)
            assert await dial(site, tmp_path, [phone]) == "busy"

            failed = page.locator("#callbacks li[data-reason=agent_return][data-state=failed]")
            await failed.wait_for(timeout=15000)
            text = await failed.inner_text()
            assert "No se logró" in text and "ocupado" in text and "intentos 1" in text
            await page.screenshot(path=str(shots / "agent_call_back_03_busy.png"), full_page=True)
            await failed.locator("button.retry").click()
            again = page.locator("#callbacks li[data-reason=agent_return][data-state=pending]")
            await again.wait_for(timeout=15000)
            assert "próximo" in await again.inner_text()
            [job] = await asyncio.to_thread(site.svc.callbacks_for, folio)
            pacing = site.settings.outbound.pacing_s
            # the busy attempt was seconds ago: the retry waits for the number's pacing (outbound.pacing_s)
            wait_s = (job.next_attempt_at - datetime.now(UTC)).total_seconds()
            assert job.state == "pending" and pacing - 120 < wait_s <= pacing, (wait_s, pacing)
            await again.locator("button.cancel").click()
            await page.locator("#callbacks li[data-reason=agent_return][data-state=cancelled]").wait_for(timeout=15000)
        finally:
            await browser.close()
    [job] = await asyncio.to_thread(site.svc.callbacks_for, folio)
    assert (job.state, job.attempts, job.last_outcome) == ("cancelled", 1, "busy")
