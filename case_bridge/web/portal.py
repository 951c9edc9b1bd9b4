"""The citizen portal: folio + PIN -> the case, its timeline across channels, and how to continue it.

The case page reads the folio only from the signed session, set after a successful verification; no URL names a
case, so a folio alone (or a guessed URL) shows nothing. Every action the citizen takes is an Interaction(web).
"""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp_jinja2
from aiohttp import web

from case_bridge.errors import CaseBridgeError, ChannelNotAllowed, InvalidInput
from case_bridge.views import LOCAL_TZ, CaseView, StatusResult
from case_bridge.web.security import CITIZEN_TTL_S, SERVICE, SETTINGS, client_key, session_of

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
APPOINTMENT_HOURS = ("09:00", "10:00", "11:00", "12:00", "13:00", "16:00")
APPOINTMENT_DAYS_AHEAD = 30

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app.add_routes(routes)


def _verified_folio(request: web.Request) -> str | None:
    session = session_of(request)
    folio, until = session.get("folio"), session.get("folio_until", 0)
    if isinstance(folio, str) and isinstance(until, int | float) and until > time.time():
        return folio
    return None


async def _my_case(request: web.Request) -> CaseView:
    folio = _verified_folio(request)
    if folio is None:
        raise web.HTTPFound("/?expirado=1")
    case = await asyncio.to_thread(request.app[SERVICE].find_case, folio)
    if case is None:
        session_of(request).pop("folio")
        raise web.HTTPFound("/")
    return case


def _appointment_days() -> list[date]:
    today = datetime.now(LOCAL_TZ).date()
    days = [today + timedelta(days=i) for i in range(1, APPOINTMENT_DAYS_AHEAD + 1)]
    return [d for d in days if d.weekday() < 5]


def appointment_time(day_text: str, hour: str) -> datetime:
    """The UTC time of an offered slot (a working day ahead, one of the hours); anything else is a time the
    service refuses with a clear message. Shared with the kiosk pages."""
    try:
        day = date.fromisoformat(day_text)
        if hour not in APPOINTMENT_HOURS or day not in _appointment_days():
            raise ValueError
        return datetime.combine(day, datetime.strptime(hour, "%H:%M").time(), LOCAL_TZ).astimezone(UTC)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)


appointment_days = _appointment_days


def lookup_failure(result: StatusResult, malformed: str) -> tuple[str, int]:
    """What a citizen is told when a folio + PIN lookup fails, and the HTTP status (portal and kiosk)."""
    if result.reason == "malformed":
        return malformed, 400
    if result.reason == "locked":
        minutes = max(1, (result.retry_after_s or 60) // 60)
        return f"Demasiados intentos. Por seguridad espere {minutes} minutos.", 429
    left = f" Le quedan {result.attempts_left} intentos." if result.attempts_left else ""
    return "El folio y el PIN no coinciden." + left, 401


@routes.get("/", name="portal_home")
@aiohttp_jinja2.template("portal_home.html")
async def home(request: web.Request) -> dict[str, object]:
    return {"expired": "expirado" in request.query}


@routes.post("/consulta")
async def lookup(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    folio_text = str(form.get("folio", ""))[:40]
    secret = str(form.get("pin", "")).strip()[:20]
    method = str(form.get("metodo", "pin"))
    svc = request.app[SERVICE]
    error, status = "", 400
    if not secret:
        error = "Escriba su PIN o los últimos 4 caracteres de su CURP."
    else:
        pin, curp4 = (None, secret) if method == "curp" else (secret, None)
        result = await asyncio.to_thread(svc.status_for, folio_text, pin=pin, curp_last4=curp4,
                                         client=client_key(request))
        if result.throttle_s:           # many recent failures from this address: slowed, never refused
            await asyncio.sleep(result.throttle_s)
        if result.ok and result.case is not None:
            session = session_of(request)
            session["folio"] = result.case.folio
            session["folio_until"] = int(time.time()) + CITIZEN_TTL_S
            await asyncio.to_thread(svc.add_interaction, result.case.folio, "web", "status_viewed",
                                    "consultó su caso en el portal")
            raise web.HTTPSeeOther("/caso")
        error, status = lookup_failure(result, "El folio no es válido: tiene 8 dígitos y el último es de "
                                               "verificación. Revise que no falte ni sobre ningún número.")
    response = aiohttp_jinja2.render_template("portal_home.html", request,
                                              {"error": error, "folio": folio_text, "metodo": method})
    response.set_status(status)
    return response


@routes.get("/caso", name="portal_case")
async def case_page(request: web.Request) -> web.StreamResponse:
    case = await _my_case(request)
    return aiohttp_jinja2.render_template("portal_case.html", request, {
        "case": case, "days": _appointment_days(), "hours": APPOINTMENT_HOURS,
        "notice": request.query.get("aviso", "")[:40], "error": ""})


async def _action(request: web.Request, case: CaseView, fn: object, notice: str, *args: object) -> web.StreamResponse:
    try:
        await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]
    except (InvalidInput, ChannelNotAllowed) as exc:
        response = aiohttp_jinja2.render_template("portal_case.html", request, {
            "case": case, "days": _appointment_days(), "hours": APPOINTMENT_HOURS, "notice": "",
            "error": str(exc)})
        response.set_status(400)
        return response
    raise web.HTTPSeeOther(f"/caso?aviso={notice}")


@routes.post("/caso/datos")
async def complete_data(request: web.Request) -> web.StreamResponse:
    case = await _my_case(request)
    form = await request.post()
    values = {item: str(form.get(f"dato_{i}", ""))[:500] for i, item in enumerate(case.missing)}
    svc = request.app[SERVICE]
    return await _action(request, case, lambda: svc.complete_missing(case.folio, values, channel="web"), "datos")


@routes.post("/caso/cita")
async def appointment(request: web.Request) -> web.StreamResponse:
    case = await _my_case(request)
    form = await request.post()
    office = str(form.get("oficina", ""))
    when = appointment_time(str(form.get("fecha", "")), str(form.get("hora", "")))
    svc = request.app[SERVICE]
    return await _action(request, case, lambda: svc.schedule_appointment(case.folio, office, when, channel="web"),
                         "cita")


@routes.post("/caso/terminar")
async def finish(request: web.Request) -> web.StreamResponse:
    case = await _my_case(request)
    svc = request.app[SERVICE]
    return await _action(request, case, lambda: svc.finish_online(case.folio), "terminado")


@routes.post("/caso/llamada")
async def callback_request(request: web.Request) -> web.StreamResponse:
    """"Llámenme cuando cambie el estado": a standby callback to the number on record (made due by the next
    status change on any channel). A number outside the dial plan is refused with a message, never dialled."""
    case = await _my_case(request)
    svc, settings = request.app[SERVICE], request.app[SETTINGS]
    view = await asyncio.to_thread(svc.accept_callback, case.folio, None,
                                   allowed_prefixes=settings.outbound.allowed_prefixes)
    if view.state in ("invalid", "opted_out"):
        reason = ("Ese número pidió no recibir llamadas." if view.state == "opted_out" else
                  "No podemos llamar al número registrado en su trámite; actualícelo en una oficina.")
        response = aiohttp_jinja2.render_template("portal_case.html", request, {
            "case": case, "days": _appointment_days(), "hours": APPOINTMENT_HOURS, "notice": "", "error": reason})
        response.set_status(400)
        return response
    raise web.HTTPSeeOther("/caso?aviso=llamada")


@routes.post("/salir")
async def leave(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    session.pop("folio")
    session.pop("folio_until")
    raise web.HTTPSeeOther("/")


__all__ = ["CaseBridgeError", "TEMPLATES_DIR", "routes", "setup"]
