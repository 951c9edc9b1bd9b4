"""`interactions.direction` (migration 0010): a callback's phone interaction is outbound, everything else inbound;
shown on the staff pages and the agent API; the cross-channel figure reads it, also after retention unlinked the
call (SQLite and PostgreSQL)."""
from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from case_bridge import journeys, retention
from case_bridge.errors import InvalidInput
from case_bridge.escalation import EscalationDesk
from case_bridge.models import CaseJourney, Interaction
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import load_settings
from testkit.call_records import OUTBOUND_NOTE
from veratur.webapp import build_app

PASSWORD = "contraseña-larga"


def _case_with_a_callback(svc: CaseService, at: datetime) -> tuple[str, str, str]:
    """A case opened on the web, then the node's callback call about it (as ivr/callback_call.py records it).
    Returns (folio, inbound call id, outbound call id)."""
    tag = uuid.uuid4().hex[:10]
    folio = svc.open_case("licencia_conducir", "web", citizen=CitizenInfo("Luis Pérez", phone="2281234567")).case.folio
    inbound = f"in-{tag}"
    svc.link_call(inbound, "2281234567", node="n1", started_at=at)
    svc.link_call_case(inbound, folio, summary="Consulta de estado")
    outbound = f"cb-{tag}"
    svc.link_call(outbound, "veratur", called="2281234567", node="n1", started_at=at + timedelta(hours=2),
                  direction="outbound")
    svc.link_call_case(outbound, folio, summary=OUTBOUND_NOTE)
    svc.close_call(outbound, "completed", ended_at=at + timedelta(hours=2, minutes=1))
    return folio, inbound, outbound


def test_callback_interactions_are_outbound(svc: CaseService) -> None:
    at = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
    folio, _, _ = _case_with_a_callback(svc, at)
    svc.add_interaction(folio, "office", "office_visit", "Trajo documentos")
    items = svc.find_case(folio).interactions                   # type: ignore[union-attr]
    assert sorted((i.channel, i.direction) for i in items) == [
        ("office", "inbound"), ("phone", "inbound"), ("phone", "outbound"), ("web", "inbound")]
    [callback] = [i for i in items if i.direction == "outbound"]
    assert callback.channel_label == "Llamada telefónica (saliente)" and callback.direction_label == "Saliente"
    assert callback.summary == OUTBOUND_NOTE
    assert {i.channel_label for i in items if i.channel == "phone" and i.direction == "inbound"} == {
        "Llamada telefónica"}
    with pytest.raises(InvalidInput, match="direction"):
        svc.add_interaction(folio, "phone", "x", direction="sideways")


def test_cross_channel_ignores_a_callback_even_after_retention_unlinked_its_call(svc: CaseService) -> None:
    """Before 0010 a callback was known by its call record; retention deletes old calls and sets the interaction's
    call_id NULL, after which the next recompute took the callback for the citizen's own phone contact."""
    at = datetime(2020, 1, 6, 15, 0, tzinfo=UTC)
    tag = uuid.uuid4().hex[:10]
    folio = svc.open_case("licencia_conducir", "web").case.folio
    outbound = f"cb-{tag}"
    svc.link_call(outbound, "veratur", called="2281234567", node="n1", started_at=at, direction="outbound")
    svc.link_call_case(outbound, folio, summary=OUTBOUND_NOTE)
    svc.close_call(outbound, "completed", ended_at=at + timedelta(minutes=1))
    svc.update_status(folio, "resolved", "Listo", channel="office")          # a finished case: its calls may go
    assert retention.purge(svc.uow, now=at + timedelta(days=400), call_records_days=365,
                           transcripts_days=90).calls >= 1
    with svc.uow.session() as s:
        case_id, call_id, direction = s.execute(select(Interaction.case_id, Interaction.call_id, Interaction.direction)
                                                .where(Interaction.channel == "phone")
                                                .where(Interaction.summary == OUTBOUND_NOTE)
                                                .where(Interaction.idempotency_key.contains(outbound))).one()
    assert call_id is None and direction == "outbound"            # unlinked, still known as the node's call
    svc.add_interaction(folio, "web", "status_viewed")            # any write recomputes the case's journey
    engine = svc.uow.engine
    with engine.begin() as conn:
        rows = conn.execute(select(CaseJourney.channel).where(CaseJourney.case_id == case_id)).all()
        assert rows == []                                         # no phone contact of the citizen's: no journey
        journeys.refresh(conn, [case_id], directions="calls")     # the 0009 rule, through the (gone) call
        assert conn.execute(select(CaseJourney.channel).where(CaseJourney.case_id == case_id)).all() != []
        journeys.refresh(conn, [case_id])
        assert conn.execute(select(CaseJourney.channel).where(CaseJourney.case_id == case_id)).all() == []


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _login(client: TestClient, svc: CaseService, role: str) -> str:  # type: ignore[type-arg]
    name = f"{role}{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, PASSWORD, role)
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/staff/login", data={"_csrf": token.group(1), "usuario": name, "contrasena": PASSWORD},
                          allow_redirects=False)
    assert r.status == 303, await r.text()
    page = await (await client.get("/agente" if role == "agent" else "/oficina")).text()
    found = re.search(r'data-csrf="([^"]+)"', page) or re.search(r'name="_csrf" value="([^"]+)"', page)
    assert found, page[:400]
    return found.group(1)


async def test_clerk_page_and_agent_api_show_the_direction(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, inbound, _ = _case_with_a_callback(svc, datetime.now(UTC) + timedelta(minutes=1))
    await _login(client, svc, "clerk")
    page = await (await client.get(f"/oficina/caso/{folio}")).text()
    timeline = page[page.index('<ol class="timeline">'):]
    timeline = timeline[:timeline.index("</ol>")]
    assert timeline.count('data-direction="outbound"') == 1 and timeline.count('data-direction="inbound"') == 2
    assert "Llamada telefónica (saliente)" in timeline

    agent = TestClient(TestServer(build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)))
    async with agent:
        token = await _login(agent, svc, "agent")
        esc_id = EscalationDesk(svc).enqueue(inbound, "caller_request", "sip:agentes@127.0.0.1:5090")
        r = await agent.post(f"/api/agente/llamadas/{esc_id}/tomar", headers={"X-CSRF-Token": token})
        assert r.status == 200, await r.text()
        case = (await r.json())["case"]
    assert case["folio"] == folio
    # the agent's own take is recorded too (call_center, inbound)
    assert sorted((i["channel"], i["direction"]) for i in case["interactions"]) == [
        ("Centro de atención telefónica", "inbound"), ("Llamada telefónica", "inbound"),
        ("Llamada telefónica (saliente)", "outbound"), ("Portal web", "inbound")]
