"""Staff-scheduled callbacks end to end, in headless Chromium against the real web app on PostgreSQL.

A clerk opens a case on the clerk page, schedules a call within a window with a reason; the real dialer (a pjsua2
edge in the test process, the real callback conversation, espeak-ng) calls a sipp phone that keys the PIN by
RFC 4733; the citizen hears the clerk's reason only after the PIN; the clerk page then shows the call answered with
one attempt. An agent holding an escalated call schedules one from the console (prefilled window: now + 2 h); a bad
window is refused on the page with its reason.

Each test has its own PostgreSQL database: the dialer leases the oldest due job of the whole database, and the
area's session database holds other tests' jobs (the console test's job, leased by "w-agent" for 60 s, is due again
once that lease ends), which it would call instead, the phone keying this case's PIN for another case's folio."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from case_bridge.escalation import EscalationDesk
from case_bridge.models import CallRecord, TranscriptTurn
from case_bridge.service import CaseService
from case_bridge.views import LOCAL_TZ, CitizenInfo
from foundation.config import Settings, load_settings
from ivr.callback_call import CallbackConversation
from ivr.dialer import Dialer
from testkit import pcaps, sipp
from testkit.db import migrated_postgres
from testkit.outbound import outbound_worker
from testkit.ports import HOST, free_udp_port
from tests.engine.test_callback_call import PHONE, PJSUA_OFFER_TE_PT
from veratur.webapp import build_app

from .conftest import REDIS_URL, TEST_TRAMITES

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.sip, pytest.mark.timeout(180)]
playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--no-first-run"]
PASSWORD = "clave-de-prueba-larga"
NUMBER = "2281234567"


def calling_settings(phone_port: int, tmp_path: Path) -> Settings:
    base = load_settings()
    out = base.outbound
    return base.model_copy(update={"data_dir": tmp_path, "outbound": out.model_copy(update={
        "enabled": True, "allowed_prefixes": ["228"], "route": f"sip:{HOST}:{phone_port}",
        "caller_name": "el Gobierno del Estado",
        # no quiet hours: the test runs at any hour of the day
        "callback": out.callback.model_copy(update={"quiet_start": "00:00", "quiet_end": "00:00"})})})


@pytest.fixture
def own_pg_database() -> Iterator[str]:
    """A fresh database for one test: no other test's due callback job for the dialer to lease first."""
    yield from migrated_postgres("cb_staffcb")


@pytest.fixture
async def site(own_pg_database: str, tmp_path: Path) -> AsyncIterator[tuple[str, CaseService, Settings]]:
    svc = CaseService.from_url(own_pg_database, redis_url=REDIS_URL, ratelimit_prefix=f"cbweb-{uuid.uuid4().hex}")
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    settings = calling_settings(free_udp_port(), tmp_path)
    runner = web.AppRunner(build_app(settings, svc, secret=uuid.uuid4().bytes * 2))
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", svc, settings
    await runner.cleanup()
    await asyncio.to_thread(svc.close)


def window_now() -> tuple[str, str, str]:
    now = datetime.now(LOCAL_TZ)
    later = now + timedelta(hours=2)
    end = "00:00" if later.date() != now.date() else later.strftime("%H:%M")
    return now.strftime("%Y-%m-%d"), now.strftime("%H:%M"), end


async def login(page, base: str, path: str, user: str) -> None:  # type: ignore[no-untyped-def]
    await page.goto(base + path)
    await page.wait_for_url("**/staff/login**")
    await page.get_by_label("Usuario").fill(user)
    await page.get_by_label("Contraseña").fill(PASSWORD)
    await page.get_by_role("button", name="Entrar").click()
    await page.wait_for_url(base + path)


async def dial_once(svc: CaseService, settings: Settings, tmp_path: Path, pin: str, job_id: int) -> str:
    """The real dialer places the due call (job `job_id`) to a sipp phone that keys `pin`; the outcome."""
    route = settings.outbound.route
    assert route
    pcap = pcaps.write_dtmf_pcap(tmp_path / "pin.pcap", pin, pt=PJSUA_OFFER_TE_PT)
    script = tmp_path / "phone.xml"
    script.write_text(PHONE.replace("@KEYS@", f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'))
    phone = await sipp.start_async(script, cwd=tmp_path, port=int(route.rsplit(":", 1)[1]), timeout_s=90)
    try:
        async with outbound_worker(settings, tmp_path, "staffcb/w0") as (edge, tts):
            talk = CallbackConversation(svc, tts, settings, first_input_s=8.0, key_timeout_s=4.0)
            dialer = Dialer(svc, settings, f"w-{uuid.uuid4().hex[:6]}", edge, talk, capacity=4,
                            active_calls=lambda: 0)
            [task] = await dialer.run_once()
            assert task.get_name() == f"callback-{job_id}"         # this case's job, the one the PIN is for
            outcome = await asyncio.wait_for(task, 80)
            code, text = await phone.wait(30)
            assert code == 0, text
    finally:
        phone.kill()
    return outcome


def turns_of_last_call(svc: CaseService) -> list[tuple[str, str]]:
    with svc.uow.session() as s:
        call = s.execute(select(CallRecord).order_by(CallRecord.id.desc())).scalars().first()
        assert call is not None
        rows = s.execute(select(TranscriptTurn).where(TranscriptTurn.call_id == call.id)
                         .order_by(TranscriptTurn.id)).scalars()
        return [(r.speaker, r.text) for r in rows]


async def test_clerk_schedules_a_call_the_dialer_places_it_and_the_page_shows_it_answered(
        site: tuple[str, CaseService, Settings], tmp_path: Path, artifacts_dir: Path) -> None:
    base, svc, settings = site
    shots = artifacts_dir / "case_bridge"
    shots.mkdir(exist_ok=True)
    opened = await asyncio.to_thread(svc.open_case, "licencia_conducir", "phone", missing=["Comprobante de domicilio"],
                                     citizen=CitizenInfo("Marta Ruiz", phone=NUMBER))
    folio = opened.case.folio
    await asyncio.to_thread(svc.update_status, folio, "awaiting_citizen", "falta comprobante", channel="office")
    clerk = f"ofi{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(svc.create_staff, clerk, PASSWORD, "clerk", "Ventanilla 2")
    reason = "Traiga su comprobante de domicilio original"

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-MX",
                                            timezone_id="America/Mexico_City")
            page = await ctx.new_page()
            await login(page, base, f"/oficina/caso/{folio}", clerk)
            assert "No hay llamadas programadas." in await page.inner_text("body")
            day, start, end = window_now()
            # a window that ends before it starts: refused with the reason, nothing queued
            await page.get_by_label("Día").fill(day)
            await page.get_by_label("Desde").fill("12:00")
            await page.get_by_label("Hasta").fill("11:00")
            await page.get_by_label("Motivo (se le dice").fill(reason)
            await page.get_by_role("button", name="Programar llamada").click()
            await page.wait_for_selector("[role=alert]")
            assert "termina antes de empezar" in await page.inner_text("[role=alert]")
            assert await asyncio.to_thread(svc.callbacks_for, folio) == []

            await page.get_by_label("Día").fill(day)
            await page.get_by_label("Desde").fill(start)
            await page.get_by_label("Hasta").fill(end)
            await page.get_by_label("Motivo (se le dice").fill(reason)
            await page.get_by_role("button", name="Programar llamada").click()
            await page.wait_for_selector("text=Llamada programada.")
            row = page.locator("#llamadas tbody tr")
            assert await row.get_attribute("data-state") == "pending"
            text = await row.inner_text()
            assert "Programada" in text and clerk in text and reason in text and "***67" in text
            assert NUMBER not in text                                  # the table masks the number
            await page.screenshot(path=str(shots / "staff_callback_01_scheduled.png"), full_page=True)

            [job] = await asyncio.to_thread(svc.callbacks_for, folio)
            assert (job.reason, job.requested_by, job.number) == ("clerk_callback", clerk, NUMBER)
            assert job.not_after is not None and job.not_after > datetime.now(LOCAL_TZ)

            outcome = await dial_once(svc, settings, tmp_path, opened.pin, job.id)
            assert outcome == "answered"
            said = turns_of_last_call(svc)
            pin_at = said.index(("caller", "(PIN, 4 dígitos)"))
            heard = [i for i, (who, t) in enumerate(said) if who == "portal" and reason in t]
            assert heard and heard[0] > pin_at, said                   # the reason only after the PIN
            assert "de parte de la oficina" in said[heard[0]][1]
            assert all(reason not in t for _, t in said[:pin_at])

            await page.reload()
            row = page.locator("#llamadas tbody tr")
            assert await row.get_attribute("data-state") == "done"
            text = await row.inner_text()
            assert "Atendida" in text and "contestó" in text
            assert await row.locator("td.attempts").inner_text() == "1"
            await page.screenshot(path=str(shots / "staff_callback_02_answered.png"), full_page=True)
        finally:
            await browser.close()


async def test_agent_schedules_a_call_back_from_the_console(site: tuple[str, CaseService, Settings]) -> None:
    base, svc, settings = site
    call_id = f"cbweb-{uuid.uuid4().hex}"
    await asyncio.to_thread(svc.link_call, call_id, NUMBER)
    folio = (await asyncio.to_thread(svc.open_case, "licencia_conducir", "phone", call_id=call_id,
                                     citizen=CitizenInfo("Luis Pérez", phone=NUMBER))).case.folio
    await asyncio.to_thread(svc.add_turn, call_id, "caller", "[DTMF 0]", "agent", idempotency_key=f"{call_id}#1")
    await asyncio.to_thread(EscalationDesk(svc).enqueue, call_id, "caller_request", "sip:agentes@127.0.0.1:5090")
    agent = f"age{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(svc.create_staff, agent, PASSWORD, "agent", "Agente 7")

    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-MX",
                                            timezone_id="America/Mexico_City")
            page = await ctx.new_page()
            await login(page, base, "/agente", agent)
            row = page.locator("#queue-rows tr", has_text=folio)
            await row.wait_for(timeout=15000)
            await row.locator("button.take").click()
            await page.locator("#callback-form").wait_for()
            assert "No hay llamadas programadas." in await page.inner_text("#callbacks")
            # the window is prefilled (now .. +2 h in the browser's zone): only the reason is typed
            assert await page.input_value("#cb-day") == datetime.now(LOCAL_TZ).strftime("%Y-%m-%d")
            await page.fill("#cb-note", "Le confirmo su cita del lunes")
            await page.get_by_role("button", name="Programar llamada").click()
            item = page.locator("#callbacks li[data-state=pending]")
            await item.wait_for(timeout=10000)
            text = await item.inner_text()
            assert "Programada" in text and agent in text and "Le confirmo su cita del lunes" in text

            # an empty reason is refused by the service, shown in the console's alert
            await page.evaluate("document.getElementById('cb-note').removeAttribute('required')")
            await page.fill("#cb-note", "   ")
            await page.get_by_role("button", name="Programar llamada").click()
            await page.locator("#console-error:not([hidden])").wait_for(timeout=10000)
            assert "motivo" in await page.inner_text("#console-error")
        finally:
            await browser.close()
    [job] = await asyncio.to_thread(svc.callbacks_for, folio)
    assert (job.state, job.reason, job.requested_by, job.number) == ("pending", "agent_callback", agent, NUMBER)
    assert job.note == "Le confirmo su cita del lunes" and job.not_after is not None
    assert timedelta(hours=1, minutes=50) < job.not_after - datetime.now(LOCAL_TZ) <= timedelta(hours=2) or \
        job.not_after.astimezone(LOCAL_TZ).strftime("%H:%M") == "00:00"
    leased = await asyncio.to_thread(svc.lease_due, "w-agent", now=datetime.now(LOCAL_TZ), lease_s=60, limit=200)
    assert job.id in [j.id for j in leased]                              # due now: the next dialer tick calls
