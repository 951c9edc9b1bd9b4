"""Office clerk pages (role clerk): find a case by folio or CURP, record the visit, change status, print a receipt,
schedule a call to the citizen (time window and reason) and see its state and attempts."""
from __future__ import annotations

import asyncio

import aiohttp_jinja2
from aiohttp import web

from case_bridge import folio as folios
from case_bridge.errors import CaseBridgeError, StaleCase
from case_bridge.models import STATUSES
from case_bridge.views import STATUS_LABELS, CaseView
from case_bridge.web.callback_forms import callback_row, parse_window
from case_bridge.web.security import SERVICE, SETTINGS, STAFF, require_role

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app.add_routes(routes)


async def _case(request: web.Request) -> CaseView:
    try:
        folio = folios.normalize(request.match_info["folio"])
    except folios.MalformedFolio as exc:
        raise web.HTTPBadRequest(text=f"Folio no válido: {exc}") from exc
    case = await asyncio.to_thread(request.app[SERVICE].find_case, folio)
    if case is None:
        raise web.HTTPNotFound(text="No hay un caso con ese folio.")
    return case


async def _render(request: web.Request, case: CaseView, *, error: str = "", notice: str = "",
                  status: int = 200) -> web.Response:
    callbacks = await asyncio.to_thread(request.app[SERVICE].callbacks_for, case.folio)
    response = aiohttp_jinja2.render_template("clerk_case.html", request, {
        "case": case, "statuses": [(s, STATUS_LABELS[s]) for s in STATUSES], "error": error,
        "notice": notice or request.query.get("aviso", "")[:40], "callbacks": [callback_row(c) for c in callbacks],
        "outbound_enabled": request.app[SETTINGS].outbound.enabled})
    response.set_status(status)
    return response


@routes.get("/oficina", name="clerk_home")
@require_role("clerk")
@aiohttp_jinja2.template("clerk_search.html")
async def search_page(request: web.Request) -> dict[str, object]:
    return {"results": None, "q": "", "error": ""}


@routes.post("/oficina/buscar")
@require_role("clerk")
async def search(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    q = str(form.get("q", "")).strip()[:40]
    svc = request.app[SERVICE]
    error, results = "", None
    compact = q.replace(" ", "").replace("-", "")
    if compact.isdigit():
        try:
            folio = folios.normalize(q)
        except folios.MalformedFolio as exc:
            error = f"Folio no válido: {exc}"
        else:
            if await asyncio.to_thread(svc.find_case, folio):
                raise web.HTTPSeeOther(f"/oficina/caso/{folio}")
            error = "No hay un caso con ese folio."
    elif len(compact) == 18 and compact.isalnum():
        results = await asyncio.to_thread(svc.find_cases_by_curp, compact)
        if not results:
            error = "No hay casos con esa CURP."
    else:
        error = "Escriba un folio (8 dígitos) o una CURP (18 caracteres)."
    response = aiohttp_jinja2.render_template("clerk_search.html", request,
                                              {"results": results, "q": q, "error": error})
    response.set_status(400 if error and results is None and not compact.isdigit() else 200)
    return response


@routes.get("/oficina/caso/{folio}", name="clerk_case")
@require_role("clerk")
async def case_page(request: web.Request) -> web.StreamResponse:
    return await _render(request, await _case(request))


@routes.post("/oficina/caso/{folio}/visita")
@require_role("clerk")
async def record_visit(request: web.Request) -> web.StreamResponse:
    case = await _case(request)
    form = await request.post()
    summary = str(form.get("resumen", "")).strip()[:1000] or "visita en oficina"
    staff = request[STAFF]
    await asyncio.to_thread(request.app[SERVICE].add_interaction, case.folio, "office", "office_visit", summary,
                            actor=staff.username)
    raise web.HTTPSeeOther(f"/oficina/caso/{case.folio}?aviso=visita")


@routes.post("/oficina/caso/{folio}/estado")
@require_role("clerk")
async def change_status(request: web.Request) -> web.StreamResponse:
    case = await _case(request)
    form = await request.post()
    status, note = str(form.get("estado", "")), str(form.get("nota", "")).strip()[:1000]
    try:
        version = int(str(form.get("version", "")))
    except ValueError:
        return await _render(request, case, error="Formulario incompleto: vuelva a cargar la página.", status=400)
    if not note:
        return await _render(request, case, error="Escriba una nota que explique el cambio.", status=400)
    try:
        await asyncio.to_thread(request.app[SERVICE].update_status, case.folio, status, note, channel="office",
                                actor=request[STAFF].username, expected_version=version)
    except StaleCase as exc:
        fresh = await _case(request)
        return await _render(request, fresh, error=str(exc), status=409)
    except CaseBridgeError as exc:
        return await _render(request, case, error=str(exc), status=400)
    raise web.HTTPSeeOther(f"/oficina/caso/{case.folio}?aviso=estado")


@routes.post("/oficina/caso/{folio}/llamada")
@require_role("clerk")
async def schedule_call(request: web.Request) -> web.StreamResponse:
    """The clerk asks the node to call the citizen within a window, saying why (after the PIN)."""
    case = await _case(request)
    form = await request.post()
    settings = request.app[SETTINGS]
    phone = str(form.get("numero", "")).strip()[:32] or None      # empty: the number on record
    try:
        start, end = parse_window(str(form.get("dia", "")), str(form.get("desde", "")), str(form.get("hasta", "")))
        view = await asyncio.to_thread(
            request.app[SERVICE].schedule_callback, case.folio, phone, start=start, end=end,
            note=str(form.get("motivo", ""))[:400], requested_by=request[STAFF].username, reason="clerk_callback",
            allowed_prefixes=settings.outbound.allowed_prefixes, schedule=settings.outbound.callback)
    except CaseBridgeError as exc:
        return await _render(request, case, error=str(exc), status=400)
    if view.state == "invalid":
        return await _render(request, case, status=400,
                             error="Ese número no se puede marcar desde el portal (fuera del plan de marcación).")
    if view.state == "opted_out":
        return await _render(request, case, status=400, error="Ese número pidió no recibir llamadas.")
    raise web.HTTPSeeOther(f"/oficina/caso/{case.folio}?aviso=llamada")


@routes.post("/oficina/caso/{folio}/desbloquear")
@require_role("clerk")
async def unlock(request: web.Request) -> web.StreamResponse:
    case = await _case(request)
    await asyncio.to_thread(request.app[SERVICE].reset_verification_lock, case.folio)
    raise web.HTTPSeeOther(f"/oficina/caso/{case.folio}?aviso=desbloqueado")


@routes.get("/oficina/caso/{folio}/recibo", name="clerk_receipt")
@require_role("clerk")
@aiohttp_jinja2.template("receipt.html")
async def receipt(request: web.Request) -> dict[str, object]:
    return {"case": await _case(request), "staff": request[STAFF]}
