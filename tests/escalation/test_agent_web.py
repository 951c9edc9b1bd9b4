"""The agent console over HTTP on the real web app (build_app: signed session, staff login, CSRF): queue, take,
transcript over the websocket, notes, closing with a case status, and bad input (no session, wrong role, another
agent's call, forged or stale ids, missing CSRF, cross-origin websocket)."""
from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.escalation import EscalationDesk
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import Settings
from tests.escalation.conftest import unique
from veratur.webapp import build_app

PASSWORD = "contraseña-larga"


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(Settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


async def login(client: TestClient, svc: CaseService, role: str = "agent") -> str:  # type: ignore[type-arg]
    name = unique(role)
    svc.create_staff(name, PASSWORD, role)
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/staff/login", data={"_csrf": token.group(1), "usuario": name, "contrasena": PASSWORD},
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == ("/agente" if role == "agent" else r.headers["Location"])
    page = await (await client.get("/agente" if role in ("agent", "admin") else "/oficina")).text()
    token = re.search(r'data-csrf="([^"]+)"', page) or re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token, page[:400]
    return token.group(1)


def escalated_call(svc: CaseService) -> tuple[int, str, str]:
    call_id = unique("web-call-")
    svc.link_call(call_id, "2281234567")
    folio = svc.open_case("licencia_conducir", "phone", call_id=call_id,
                          citizen=CitizenInfo("Luis Pérez", phone="2281234567")).case.folio
    svc.add_turn(call_id, "portal", "Bienvenido.", idempotency_key=f"{call_id}#1")
    svc.add_turn(call_id, "caller", "[DTMF 0]", "agent", idempotency_key=f"{call_id}#2")
    esc_id = EscalationDesk(svc).enqueue(call_id, "caller_request", "sip:agentes@127.0.0.1:5090")
    return esc_id, call_id, folio


async def test_take_stream_note_and_close(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    esc_id, call_id, folio = escalated_call(svc)
    token = await login(client, svc)
    page = await (await client.get("/agente")).text()
    assert "Consola del agente" in page and "/static/agent.js" in page
    items = (await (await client.get("/api/agente/cola")).json())["items"]
    assert any(i["id"] == esc_id and i["folio"] == folio and i["state"] == "waiting" for i in items)
    r = await client.post(f"/api/agente/llamadas/{esc_id}/tomar", headers={"X-CSRF-Token": token})
    assert r.status == 200, await r.text()
    popped = await r.json()
    assert popped["case"]["folio"] == folio and popped["case"]["citizen_name"] == "Luis Pérez"
    assert [t["text"] for t in popped["transcript"]] == ["Bienvenido.", "[DTMF 0]"]
    last = popped["transcript"][-1]["id"]
    async with client.ws_connect(f"/api/agente/llamadas/{esc_id}/ws?after={last}") as ws:
        first = await ws.receive_json(timeout=5)
        assert first == {"type": "call", "live": True}
        svc.add_turn(call_id, "portal", "Le comunico con un agente.", idempotency_key=f"{call_id}#3")
        turn = await ws.receive_json(timeout=5)
        assert turn["type"] == "turn" and turn["text"] == "Le comunico con un agente." and turn["id"] > last
        svc.close_call(call_id, "transferred", transfer_target="sip:agentes@127.0.0.1:5090")
        assert await ws.receive_json(timeout=5) == {"type": "call", "live": False}
    r = await client.post(f"/api/agente/llamadas/{esc_id}/notas", json={"text": "Quiere cita."},
                          headers={"X-CSRF-Token": token})
    assert r.status == 201 and (await r.json())["text"] == "Quiere cita."
    r = await client.post(f"/api/agente/llamadas/{esc_id}/cerrar", headers={"X-CSRF-Token": token},
                          json={"disposition": "resolved", "status": "in_review", "note": "Revisión",
                                "version": popped["case"]["version"]})
    assert r.status == 200, await r.text()
    case = svc.find_case(folio)
    assert case is not None and case.status == "in_review"
    assert any(i.channel == "call_center" and i.outcome == "resolved" for i in case.interactions)
    r = await client.post(f"/api/agente/llamadas/{esc_id}/notas", json={"text": "tarde"},
                          headers={"X-CSRF-Token": token})
    assert r.status == 410                                            # a stale page acting on a closed call


async def test_websocket_and_api_refuse_without_session(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    esc_id, _, _ = escalated_call(svc)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/agente/llamadas/{esc_id}/ws")
    assert refused.value.status == 401
    assert (await client.get("/api/agente/cola")).status == 401
    r = await client.get("/agente", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"].startswith("/staff/login")
    # a forged session cookie is no session
    client.session.cookie_jar.update_cookies({"vt_session": "eyJmYWtlIjp0cnVlfQ.forged"})
    with pytest.raises(aiohttp.WSServerHandshakeError) as forged:
        await client.ws_connect(f"/api/agente/llamadas/{esc_id}/ws")
    assert forged.value.status == 401


async def test_clerk_role_cannot_use_the_console(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    esc_id, _, _ = escalated_call(svc)
    await login(client, svc, "clerk")
    assert (await client.get("/agente")).status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/agente/llamadas/{esc_id}/ws")
    assert refused.value.status == 403


async def test_forged_stale_and_foreign_ids(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    esc_id, _, _ = escalated_call(svc)
    token = await login(client, svc)
    for bad in ("999999999", "0"):
        assert (await client.post(f"/api/agente/llamadas/{bad}/tomar", headers={"X-CSRF-Token": token})).status == 404
        with pytest.raises(aiohttp.WSServerHandshakeError) as nf:
            await client.ws_connect(f"/api/agente/llamadas/{bad}/ws")
        assert nf.value.status == 404
    for junk in ("abc", "1;DROP", "-1", "1e3"):
        assert (await client.get(f"/api/agente/llamadas/{junk}")).status == 404
    # not taken yet: reading it is refused
    assert (await client.get(f"/api/agente/llamadas/{esc_id}")).status == 403
    # missing CSRF header
    assert (await client.post(f"/api/agente/llamadas/{esc_id}/tomar")).status == 403
    # another agent took it first
    other = EscalationDesk(svc)
    other_id = svc.create_staff(unique("otro"), PASSWORD, "agent").id
    other.take(esc_id, other_id)
    r = await client.post(f"/api/agente/llamadas/{esc_id}/tomar", headers={"X-CSRF-Token": token})
    assert r.status == 409 and "otro agente" in (await r.json())[0]["description"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
        await client.ws_connect(f"/api/agente/llamadas/{esc_id}/ws")
    assert foreign.value.status == 403
    # bad bodies
    r = await client.post(f"/api/agente/llamadas/{esc_id}/notas", data=b"not json",
                          headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert r.status == 400


async def test_cross_origin_websocket_is_refused(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    esc_id, _, _ = escalated_call(svc)
    token = await login(client, svc)
    assert (await client.post(f"/api/agente/llamadas/{esc_id}/tomar", headers={"X-CSRF-Token": token})).status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/agente/llamadas/{esc_id}/ws", origin="http://evil.example")
    assert refused.value.status == 403
    async with client.ws_connect(f"/api/agente/llamadas/{esc_id}/ws") as ws:   # same origin still works
        assert (await ws.receive_json(timeout=5))["type"] == "turn"
    await asyncio.sleep(0)
