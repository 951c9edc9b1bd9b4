"""The web app over HTTP (a real aiohttp server on a free port): portal, clerk pages, Open311, and bad input."""
from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import load_settings
from veratur.webapp import build_app

CURP = "LOPM850505MVZPRR07"


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _csrf(client: TestClient, path: str = "/") -> str:  # type: ignore[type-arg]
    page = await (await client.get(path)).text()
    found = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


async def _login(client: TestClient, svc: CaseService, role: str) -> str:  # type: ignore[type-arg]
    name = f"{role}{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, "contraseña-larga", role)
    token = await _csrf(client, "/staff/login")
    r = await client.post("/staff/login", data={"_csrf": token, "usuario": name, "contrasena": "contraseña-larga"},
                          allow_redirects=False)
    assert r.status == 303, await r.text()
    return await _csrf(client, "/")   # a new token after sign-in


def _opened(svc: CaseService) -> tuple[str, str]:
    opened = svc.open_case("acta_nacimiento", "phone", citizen=CitizenInfo("María López", curp=CURP))
    return opened.case.folio, opened.pin


async def test_portal_shows_nothing_without_verification(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, pin = _opened(svc)
    r = await client.get("/caso", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"].startswith("/")
    for path in (f"/caso/{folio}", f"/caso?folio={folio}", f"/oficina/caso/{folio}"):
        text = await (await client.get(path)).text()
        assert "María" not in text and "acta de nacimiento" not in text.lower()
    token = await _csrf(client)
    r = await client.post("/consulta", data={"_csrf": token, "folio": folio, "pin": pin})
    assert r.status == 200 and "María" not in (await r.text()) and "acta de nacimiento" in (await r.text()).lower()


async def test_wrong_pin_then_lockout(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, pin = _opened(svc)
    token = await _csrf(client)
    wrong = str((int(pin) + 1) % 10000).zfill(4)
    r1 = await client.post("/consulta", data={"_csrf": token, "folio": folio, "pin": wrong})
    assert r1.status == 401 and "Le quedan 2 intentos" in await r1.text()
    await client.post("/consulta", data={"_csrf": token, "folio": folio, "pin": wrong})
    r3 = await client.post("/consulta", data={"_csrf": token, "folio": folio, "pin": wrong})
    assert r3.status == 429 and "Demasiados intentos" in await r3.text()
    r4 = await client.post("/consulta", data={"_csrf": token, "folio": folio, "pin": pin})
    assert r4.status == 429


async def test_malformed_folio(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, pin = _opened(svc)
    token = await _csrf(client)
    bad = folio[:-1] + str((int(folio[-1]) + 1) % 10)
    for value in (bad, "12", "<script>alert(1)</script>", "1" * 500):
        r = await client.post("/consulta", data={"_csrf": token, "folio": value, "pin": pin})
        text = await r.text()
        assert r.status == 400 and "dígito" in text or "no es válido" in text
        assert "<script>alert" not in text
    assert svc.limiter.check(f"folio:{folio}").failures == 0


async def test_missing_or_wrong_csrf_token(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, pin = _opened(svc)
    await _csrf(client)
    r = await client.post("/consulta", data={"folio": folio, "pin": pin})
    assert r.status == 403
    r = await client.post("/consulta", data={"_csrf": "forged", "folio": folio, "pin": pin})
    assert r.status == 403
    async with ClientSession() as fresh:   # no session cookie at all (a cross-site form post)
        r2 = await fresh.post(client.make_url("/consulta"), data={"_csrf": "x", "folio": folio, "pin": pin})
        assert r2.status == 403


async def test_tampered_session_cookie_is_ignored(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, _ = _opened(svc)
    import base64
    body = base64.urlsafe_b64encode(json.dumps({"folio": folio, "folio_until": 9e12, "exp": 9e12}).encode())
    client.session.cookie_jar.update_cookies({"vt_session": body.decode().rstrip("=") + ".deadbeef"})
    r = await client.get("/caso", allow_redirects=False)
    assert r.status == 302


async def test_clerk_cannot_reach_other_roles_pages(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    from aiohttp import web

    from case_bridge.web.security import require_role

    @require_role("agent")
    async def agent_page(request: web.Request) -> web.Response:
        return web.Response(text="cola de agentes")

    @require_role("admin")
    async def admin_page(request: web.Request) -> web.Response:
        return web.Response(text="administración")

    # the same decorator the agent console and admin use, mounted on a second app instance
    app = build_app(load_settings(), svc, secret=b"s" * 32)
    app.router.add_get("/prueba/agente", agent_page)
    app.router.add_get("/prueba/admin", admin_page)
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/prueba/agente", allow_redirects=False)).status == 302
        await _login(c, svc, "clerk")
        assert (await c.get("/oficina")).status == 200
        for path in ("/prueba/agente", "/prueba/admin", "/agente", "/api/agente/cola"):
            r = await c.get(path)
            assert r.status == 403 and "no tiene permiso" in (await r.text())
    async with TestClient(TestServer(build_app(load_settings(), svc, secret=b"t" * 32))) as c2:
        await _login(c2, svc, "agent")
        assert (await c2.get("/oficina")).status == 403


async def test_clerk_finds_by_curp_changes_status_with_conflict(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, _ = _opened(svc)
    token = await _login(client, svc, "clerk")
    r = await client.post("/oficina/buscar", data={"_csrf": token, "q": CURP})
    assert folio in (await r.text()).replace("-", "")
    r = await client.post("/oficina/buscar", data={"_csrf": token, "q": f"{folio[:4]}-{folio[4:]}"},
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == f"/oficina/caso/{folio}"
    page = await (await client.get(f"/oficina/caso/{folio}")).text()
    version = re.search(r'name="version" value="(\d+)"', page)
    assert version
    svc.add_interaction(folio, "web", "status_viewed", "otra ventana")   # someone else changes the case meanwhile
    r = await client.post(f"/oficina/caso/{folio}/estado",
                          data={"_csrf": token, "estado": "closed", "nota": "cerrado", "version": version.group(1)})
    assert r.status == 409 and "cambió" in await r.text()
    page = await (await client.get(f"/oficina/caso/{folio}")).text()
    fresh = re.search(r'name="version" value="(\d+)"', page)
    assert fresh
    r = await client.post(f"/oficina/caso/{folio}/estado",
                          data={"_csrf": token, "estado": "closed", "nota": "cerrado en ventanilla",
                                "version": fresh.group(1)})
    assert r.status == 200 and "Cerrado" in await r.text()
    receipt = await (await client.get(f"/oficina/caso/{folio}/recibo")).text()
    assert f"{folio[:4]}-{folio[4:]}" in receipt and "Comprobante" in receipt


async def test_open311_services_create_get_and_errors(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    services = await (await client.get("/open311/v2/services.json")).json()
    assert {"acta_nacimiento", "licencia_conducir"} <= {s["service_code"] for s in services}
    body = {"service_code": "acta_nacimiento", "first_name": "Rosa", "last_name": "Díaz", "curp": CURP}
    r = await client.post("/open311/v2/requests.json", json=body, headers={"Idempotency-Key": "k-" + uuid.uuid4().hex})
    assert r.status == 201
    created = (await r.json())[0]
    folio, pin = created["service_request_id"], created["pin"]
    r = await client.post("/open311/v2/requests.json", json=body, headers={"Idempotency-Key": "same-key-1"})
    again = await client.post("/open311/v2/requests.json", json=body, headers={"Idempotency-Key": "same-key-1"})
    assert again.status == 200 and (await again.json())[0]["service_request_id"] == (await r.json())[0]["service_request_id"]
    got = await client.get(f"/open311/v2/requests/{folio}.json", headers={"X-Veratur-PIN": pin})
    item = (await got.json())[0]
    assert got.status == 200 and item["status"] == "open" and item["service_code"] == "acta_nacimiento"
    assert "Rosa" not in json.dumps(item)

    async def err(r: object) -> tuple[int, str]:
        resp = r  # type: ignore[assignment]
        data = await resp.json()  # type: ignore[attr-defined]
        assert isinstance(data, list) and set(data[0]) == {"code", "description"}
        return resp.status, data[0]["description"]  # type: ignore[attr-defined]

    assert (await err(await client.get(f"/open311/v2/requests/{folio}.json")))[0] == 401
    assert (await err(await client.get("/open311/v2/requests/12345.json", headers={"X-Veratur-PIN": "1"})))[0] == 400
    wrong = await client.get(f"/open311/v2/requests/{folio}.json", headers={"X-Veratur-PIN": "99999"})
    assert (await err(wrong))[0] == 404
    bad_json = await client.post("/open311/v2/requests.json", data=b'{"service_code": ',
                                 headers={"Content-Type": "application/json"})
    status, text = await err(bad_json)
    assert status == 400 and "JSON" in text
    not_obj = await client.post("/open311/v2/requests.json", json=[1, 2])
    assert (await err(not_obj))[0] == 400
    huge = await client.post("/open311/v2/requests.json", data=b'{"a": "' + b"x" * 200_000 + b'"}',
                             headers={"Content-Type": "application/json"})
    assert (await err(huge))[0] == 413
    unknown = await client.post("/open311/v2/requests.json", json={"service_code": "nope"})
    assert (await err(unknown))[0] == 404
    wrong_type = await client.post("/open311/v2/requests.json", data=b"hola", headers={"Content-Type": "text/plain"})
    assert (await err(wrong_type))[0] == 400
    assert (await err(await client.get("/open311/v2/nothing.json")))[0] == 404
    spec = await (await client.get("/open311/v2/openapi.json")).json()
    assert spec["openapi"].startswith("3.") and "/open311/v2/requests.json" in spec["paths"]


async def test_oversized_form_body_is_refused(client: TestClient) -> None:  # type: ignore[type-arg]
    token = await _csrf(client)
    r = await client.post("/consulta", data={"_csrf": token, "folio": "1" * 100_000, "pin": "1"})
    assert r.status == 413


async def test_healthz_and_security_headers(client: TestClient) -> None:  # type: ignore[type-arg]
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["database"] == "ok"
    assert "Set-Cookie" not in r.headers          # no session for what needs none
    page = await client.get("/")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


async def test_logs_hold_no_curp_or_phone(client: TestClient, svc: CaseService, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[type-arg]
    caplog.set_level(logging.DEBUG)
    svc.open_case("acta_nacimiento", "web", citizen=CitizenInfo("Eva", curp=CURP, phone="2299876543"))
    call_id = f"log-{uuid.uuid4().hex}"
    svc.link_call(call_id, "2299876543")
    await client.post("/open311/v2/requests.json", json={"service_code": "acta_nacimiento", "first_name": "E",
                                                         "curp": CURP, "phone": "2299876543"})
    text = caplog.text
    assert CURP not in text and "2299876543" not in text


async def test_citizen_completes_data_and_finishes_online(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    folio, pin = _opened(svc)                      # acta_nacimiento: finishes on the web once CURP is given
    token = await _csrf(client)
    r = await client.post("/consulta", data={"_csrf": token, "folio": folio, "pin": pin})
    page = await r.text()
    assert "Terminar trámite en línea" not in page          # something is still missing
    r = await client.post("/caso/terminar", data={"_csrf": token})
    assert r.status == 400 and "faltan datos" in (await r.text()).lower()
    r = await client.post("/caso/datos", data={"_csrf": token, "dato_0": CURP})
    assert r.status == 200 and "Recibimos sus datos" in await r.text()
    r = await client.post("/caso/cita", data={"_csrf": token, "oficina": "Otra", "fecha": "2000-01-01", "hora": "10:00"})
    assert r.status == 400 and "fecha futura" in await r.text()
    r = await client.post("/caso/terminar", data={"_csrf": token})
    assert r.status == 200 and "Su trámite quedó terminado" in await r.text()
    case = svc.find_case(folio)
    assert case is not None and case.status == "resolved"
    assert [i.outcome for i in case.interactions if i.channel == "web"] == ["status_viewed", "data_completed",
                                                                             "finished_online"]
    r = await client.post("/salir", data={"_csrf": token}, allow_redirects=False)
    assert r.status == 303
    assert (await client.get("/caso", allow_redirects=False)).status == 302


async def test_open_api_caps_cases_per_client(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    from case_bridge.ratelimit import OPEN_MAX_PER_WINDOW

    for _ in range(OPEN_MAX_PER_WINDOW):
        svc.limiter.hit("open:ip:127.0.0.1")
    r = await client.post("/open311/v2/requests.json", json={"service_code": "acta_nacimiento"})
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    assert (await r.json())[0]["code"] == 429


async def test_citizen_asks_for_a_callback_on_status_change(svc: CaseService) -> None:
    """The portal's "call me when the status changes": a standby callback to the number on record, made due by
    the next status change; a number outside the dial plan is refused with a message and never queued to dial."""
    settings = load_settings()
    dial_plan = settings.model_copy(update={"outbound": settings.outbound.model_copy(
        update={"allowed_prefixes": ["229"]})})
    opened = svc.open_case("acta_nacimiento", "phone", citizen=CitizenInfo("Ana Ruiz", phone="2291234567"))
    foreign = svc.open_case("acta_nacimiento", "phone", citizen=CitizenInfo("Luis Paz", phone="5512345678"))
    for case, expected in ((opened, 303), (foreign, 400)):
        app = build_app(dial_plan, svc, secret=uuid.uuid4().bytes * 2)
        async with TestClient(TestServer(app)) as client:
            token = await _csrf(client)
            r = await client.post("/consulta", data={"_csrf": token, "folio": case.case.folio, "pin": case.pin})
            assert "Llámenme cuando cambie el estado" in await r.text()
            r = await client.post("/caso/llamada", data={"_csrf": token}, allow_redirects=False)
            assert r.status == expected, await r.text()
            if expected == 400:
                assert "No podemos llamar al número registrado" in await r.text()
    [job] = svc.callbacks_for(opened.case.folio)
    assert job.state == "standby" and job.number == "2291234567"
    [refused] = svc.callbacks_for(foreign.case.folio)
    assert refused.state == "invalid"
    svc.update_status(opened.case.folio, "in_review", "revisado en oficina", channel="office", actor="clerk")
    [job] = svc.callbacks_for(opened.case.folio)
    assert job.state == "pending"                 # the status change made it due: the dialer calls now
