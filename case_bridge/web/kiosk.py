"""The kiosk channel (/kiosco): touch screens in offices and shopping centres, served only to enrolled devices.

A kiosk holds its device token in the `vt_kiosk` cookie, set once when an admin enrols it (/admin/quioscos gives
the token, /kiosco/alta on the device stores it). Every kiosk page re-checks the token, so a revoked kiosk is
refused at its next touch. A citizen's folio lives in the signed session only while the screen is used: it is
cleared after `web.kiosk_idle_s` without a touch (the page counts down and clears itself; the server also refuses
a stale session). Lookups use the portal's folio+PIN verification with the kiosk as the rate-limit client
(`kiosk:<id>`), so a kiosk's failures never lock out another kiosk. Every action is an Interaction(kiosk) whose
actor names the kiosk.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp_jinja2
from aiohttp import web

from case_bridge.errors import ChannelNotAllowed, InvalidInput
from case_bridge.kiosks import KioskView
from case_bridge.views import CaseView
from case_bridge.web.portal import APPOINTMENT_HOURS, appointment_days, appointment_time, lookup_failure
from case_bridge.web.security import SERVICE, SETTINGS, STAFF, Session, require_role, session_of

KIOSK_COOKIE = "vt_kiosk"
KIOSK_COOKIE_AGE_S = 365 * 24 * 3600
KIOSK_DAYS_SHOWN = 5             # a few large day buttons rather than a month-long list
SESSION_KEYS = ("k_kiosk", "k_folio", "k_seen", "k_start", "k_done")
KIOSK = web.RequestKey("kiosk", KioskView)

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application) -> None:
    app.add_routes(routes)


def idle_s(request: web.Request) -> int:
    return request.app[SETTINGS].web.kiosk_idle_s


def _refuse(request: web.Request, message: str) -> web.Response:
    response = aiohttp_jinja2.render_template("kiosk_refused.html", request, {"message": message})
    response.set_status(403)
    return response


def enrolled(handler: Handler) -> Handler:
    """Only an enrolled, not revoked kiosk reaches `handler` (which finds it in `request[KIOSK]`)."""

    async def checked(request: web.Request) -> web.StreamResponse:
        token = request.cookies.get(KIOSK_COOKIE, "")
        kiosk = await asyncio.to_thread(request.app[SERVICE].kiosk_for_token, token) if token else None
        if kiosk is None:
            return _refuse(request, "Este equipo no está registrado como quiosco." if not token
                           else "Este quiosco fue dado de baja.")
        request[KIOSK] = kiosk
        return await handler(request)

    checked.__name__ = handler.__name__
    return checked


def _clear(session: Session) -> None:
    for key in SESSION_KEYS:
        if key in session:
            session.pop(key)


def _folio(request: web.Request) -> str | None:
    """The folio verified on this kiosk, if the screen was touched within the idle time."""
    session, kiosk = session_of(request), request[KIOSK]
    folio, seen = session.get("k_folio"), session.get("k_seen", 0)
    if (not isinstance(folio, str) or session.get("k_kiosk") != kiosk.id or not isinstance(seen, int | float)
            or time.time() - seen > idle_s(request)):
        if folio is not None:
            _clear(session)
        return None
    session["k_seen"] = int(time.time())
    return folio


async def _case(request: web.Request) -> CaseView:
    folio = _folio(request)
    case = await asyncio.to_thread(request.app[SERVICE].find_case, folio) if folio else None
    if case is None:
        _clear(session_of(request))
        raise web.HTTPSeeOther("/kiosco?fin=1")
    return case


def _done(request: web.Request, what: str) -> None:
    session = session_of(request)
    done = [str(x) for x in session.get("k_done", [])][-8:]
    session["k_done"] = [*done, what]


def _ctx(request: web.Request, **extra: object) -> dict[str, object]:
    return {"kiosk": request[KIOSK], "idle_s": idle_s(request), **extra}


def next_step(case: CaseView) -> str:
    """What the citizen does next, in plain words (the receipt and the case screen say it)."""
    if not case.is_open:
        return "Su trámite ya terminó. No necesita hacer nada más."
    if case.appointment_at is not None:
        bring = f" Lleve: {', '.join(case.missing)}." if case.missing else " Lleve una identificación oficial."
        return f"Acuda a su cita en {case.appointment_office}.{bring}"
    if case.missing:
        return f"Falta entregar: {', '.join(case.missing)}. Agende una cita en oficina para entregarlo."
    return "Espere la respuesta de la oficina. Puede consultar su trámite aquí, en el portal o por teléfono."


# -- pages ----------------------------------------------------------------------------------------------------
@routes.get("/kiosco", name="kiosk_home")
@enrolled
async def home(request: web.Request) -> web.StreamResponse:
    ended = "fin" in request.query
    if ended or session_of(request).get("k_folio"):
        _clear(session_of(request))
    return aiohttp_jinja2.render_template("kiosk_home.html", request, _ctx(request, error="", folio="",
                                                                           ended=ended))


@routes.post("/kiosco/consulta")
@enrolled
async def lookup(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    folio_text = str(form.get("folio", ""))[:40]
    pin = str(form.get("pin", "")).strip()[:20]
    svc, kiosk = request.app[SERVICE], request[KIOSK]
    error, status = "", 400
    if not pin:
        error = "Escriba su PIN de 4 números."
    else:
        result = await asyncio.to_thread(svc.status_for, folio_text, pin=pin, client=kiosk.actor)
        if result.throttle_s:           # a kiosk with many recent failures is slowed, never refused
            await asyncio.sleep(result.throttle_s)
        if result.ok and result.case is not None:
            session = session_of(request)
            _clear(session)
            now = time.time()
            session.update(k_kiosk=kiosk.id, k_folio=result.case.folio, k_seen=int(now), k_start=now, k_done=[])
            session.changed = True
            _done(request, "Consultó su trámite")
            await asyncio.to_thread(svc.add_interaction, result.case.folio, "kiosk", "status_viewed",
                                    f"consultó su caso en el quiosco {kiosk.name}", actor=kiosk.actor)
            raise web.HTTPSeeOther("/kiosco/caso")
        error, status = lookup_failure(result, "El folio no es válido. Tiene 8 números. "
                                               "Revise que no falte ni sobre ninguno.")
    response = aiohttp_jinja2.render_template("kiosk_home.html", request,
                                              _ctx(request, error=error, folio=folio_text, ended=False))
    response.set_status(status)
    return response


def _render_case(request: web.Request, case: CaseView, *, error: str = "", status: int = 200) -> web.Response:
    days = appointment_days()[:KIOSK_DAYS_SHOWN]
    response = aiohttp_jinja2.render_template("kiosk_case.html", request, _ctx(
        request, case=case, days=days, hours=APPOINTMENT_HOURS, error=error, next_step=next_step(case),
        notice=request.query.get("aviso", "")[:20],
        can_book="office" in case.tramite.finish_channels and bool(case.tramite.offices)))
    response.set_status(status)
    return response


@routes.get("/kiosco/caso", name="kiosk_case")
@enrolled
async def case_page(request: web.Request) -> web.StreamResponse:
    return _render_case(request, await _case(request))


@routes.post("/kiosco/cita")
@enrolled
async def appointment(request: web.Request) -> web.StreamResponse:
    case = await _case(request)
    form = await request.post()
    office = str(form.get("oficina", ""))
    when = appointment_time(str(form.get("fecha", "")), str(form.get("hora", "")))
    kiosk = request[KIOSK]
    try:
        fresh = await asyncio.to_thread(request.app[SERVICE].schedule_appointment, case.folio, office, when,
                                        channel="kiosk", actor=kiosk.actor)
    except (InvalidInput, ChannelNotAllowed) as exc:
        return _render_case(request, case, error=str(exc), status=400)
    _done(request, f"Agendó una cita en {fresh.appointment_office}")
    raise web.HTTPSeeOther("/kiosco/caso?aviso=cita")


@routes.post("/kiosco/datos")
@enrolled
async def complete_data(request: web.Request) -> web.StreamResponse:
    """The number or reference of a missing document, typed on the keypad (the portal's same step)."""
    case = await _case(request)
    form = await request.post()
    values = {item: str(form.get(f"dato_{i}", ""))[:40] for i, item in enumerate(case.missing)}
    try:
        await asyncio.to_thread(request.app[SERVICE].complete_missing, case.folio, values, channel="kiosk",
                                actor=request[KIOSK].actor)
    except (InvalidInput, ChannelNotAllowed) as exc:
        return _render_case(request, case, error=str(exc), status=400)
    _done(request, "Entregó datos: " + ", ".join(k for k, v in values.items() if v.strip()))
    raise web.HTTPSeeOther("/kiosco/caso?aviso=datos")


@routes.post("/kiosco/terminar")
@enrolled
async def finish(request: web.Request) -> web.StreamResponse:
    """Finish the trámite here, where the catalog lets it be finished at a kiosk and nothing is missing."""
    case = await _case(request)
    try:
        await asyncio.to_thread(request.app[SERVICE].finish_online, case.folio, channel="kiosk",
                                actor=request[KIOSK].actor)
    except (InvalidInput, ChannelNotAllowed) as exc:
        return _render_case(request, case, error=str(exc), status=400)
    _done(request, "Terminó su trámite en el quiosco")
    raise web.HTTPSeeOther("/kiosco/caso?aviso=terminado")


@routes.get("/kiosco/recibo", name="kiosk_receipt")
@enrolled
async def receipt(request: web.Request) -> web.StreamResponse:
    case = await _case(request)
    session, kiosk = session_of(request), request[KIOSK]
    done = [str(x) for x in session.get("k_done", [])]
    # one record per receipt of a visit: reloading the page does not add another (a new action, then a new one)
    key = f"kiosk-receipt:{kiosk.id}:{case.folio}:{session.get('k_start', 0)}:{len(done)}"
    await asyncio.to_thread(request.app[SERVICE].add_interaction, case.folio, "kiosk", "receipt_printed",
                            "imprimió su comprobante en el quiosco", actor=kiosk.actor, idempotency_key=key)
    return aiohttp_jinja2.render_template("kiosk_receipt.html", request, _ctx(
        request, case=case, done=done, next_step=next_step(case), printed_at=time.time()))


@routes.post("/kiosco/salir")
@enrolled
async def leave(request: web.Request) -> web.StreamResponse:
    _clear(session_of(request))
    if request.headers.get("X-Requested-With") == "kiosk-idle":
        return web.Response(status=204)
    raise web.HTTPSeeOther("/kiosco?fin=1")


# -- enrolment ---------------------------------------------------------------------------------------------------
@routes.get("/kiosco/alta", name="kiosk_enrol")
async def enrol_page(request: web.Request) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("kiosk_enrol.html", request, {"error": ""})


@routes.post("/kiosco/alta")
async def enrol_device(request: web.Request) -> web.StreamResponse:
    """Store an admin-issued device token on this device (the kiosk cookie), after checking it is valid."""
    form = await request.post()
    token = str(form.get("token", "")).strip()[:200]
    kiosk = await asyncio.to_thread(request.app[SERVICE].kiosk_for_token, token) if token else None
    if kiosk is None:
        response = aiohttp_jinja2.render_template("kiosk_enrol.html", request,
                                                  {"error": "La clave del quiosco no es válida o fue dada de baja."})
        response.set_status(403)
        return response
    response = web.HTTPSeeOther("/kiosco")
    response.set_cookie(KIOSK_COOKIE, token, httponly=True, samesite="Strict", path="/kiosco",
                        max_age=KIOSK_COOKIE_AGE_S, secure=request.url.host not in ("127.0.0.1", "localhost", "::1"))
    raise response


@routes.get("/admin/quioscos", name="admin_kiosks")
@require_role("admin")
async def admin_kiosks(request: web.Request) -> web.StreamResponse:
    kiosks = await asyncio.to_thread(request.app[SERVICE].list_kiosks)
    return aiohttp_jinja2.render_template("admin_kiosks.html", request, {"kiosks": kiosks, "new": None,
                                                                         "token": "", "error": ""})


@routes.post("/admin/quioscos")
@require_role("admin")
async def admin_enrol(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    svc = request.app[SERVICE]
    error, new, token = "", None, ""
    try:
        new, token = await asyncio.to_thread(svc.enrol_kiosk, str(form.get("nombre", ""))[:200],
                                             actor=request[STAFF].username)
    except InvalidInput as exc:
        error = str(exc)
    kiosks = await asyncio.to_thread(svc.list_kiosks)
    response = aiohttp_jinja2.render_template("admin_kiosks.html", request, {"kiosks": kiosks, "new": new,
                                                                             "token": token, "error": error})
    response.set_status(400 if error else 200)
    return response


@routes.post("/admin/quioscos/{kiosk_id:\\d+}/baja")
@require_role("admin")
async def admin_revoke(request: web.Request) -> web.StreamResponse:
    try:
        await asyncio.to_thread(request.app[SERVICE].revoke_kiosk, int(request.match_info["kiosk_id"]))
    except InvalidInput as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    raise web.HTTPSeeOther("/admin/quioscos")
