"""The call-center agent console (role agent): the queue of escalated calls, taking one, its live transcript,
notes, disposition and case status. One page (`/agente`) driven by plain JS (`/static/agent.js`) over a small JSON
API (`/api/agente/...`, CSRF header on every POST) and one websocket per taken call.

Live transcript: each open websocket polls the database every `POLL_S` for turns after the last one sent
(`transcript_turns` is indexed on (call_id, id), so this is one cheap indexed query per console per tick). The
database, not Redis pub/sub, is the source because the turns are committed by the IVR workers' recorder —
directly or, after an outage, replayed from a worker's outbox — and both paths end in the database; a pub/sub
message would miss the replayed ones and need a second source of truth. With tens of agents this is tens of
queries per second; beyond that a notify channel could wake the sockets instead of the timer.

The websocket is authenticated by the staff session cookie (no session: 401 before the upgrade; another agent's
call: 403; unknown id: 404) and accepts only a same-origin handshake.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import WSMsgType, web

from case_bridge.errors import AlreadyTaken, CaseBridgeError, DatabaseUnavailable, InvalidInput, StaleCase
from case_bridge.escalation import (
    AGENT_DISPOSITIONS,
    AgentCase,
    EscalationClosed,
    EscalationDesk,
    EscalationNotFound,
    NotYours,
    QueueItem,
)
from case_bridge.models import STATUSES
from case_bridge.views import LOCAL_TZ, STATUS_LABELS, TurnView
from case_bridge.web.callback_forms import callback_row, parse_window
from case_bridge.web.security import SERVICE, SETTINGS, STAFF, require_role
from foundation import jsonbody
from foundation.logs import kv, mask_curp

log = logging.getLogger("case_bridge.web.agent")
routes = web.RouteTableDef()
DESK = web.AppKey("escalation_desk", EscalationDesk)
POLL_S = 0.5                    # transcript poll per open socket
WS_HEARTBEAT_S = 20.0
MAX_SOCKET_S = 4 * 3600.0       # a console left open all shift reconnects after this
SPEAKER_LABELS = {"caller": "Ciudadano", "portal": "Portal", "agent": "Agente"}
REASON_LABELS = {"caller_request": "Pidió un agente", "no_match": "No se le entendió", "no_input": "No respondió",
                 "verification_locked": "Verificación bloqueada", "dialogue_error": "Falla del diálogo"}


def setup(app: web.Application) -> None:
    app[DESK] = EscalationDesk(app[SERVICE])
    app.add_routes(routes)


# ---- JSON shapes ------------------------------------------------------------------------------------------------
def _time(value: datetime | None) -> str | None:
    return value.astimezone(LOCAL_TZ).isoformat(timespec="seconds") if value else None


def item_json(item: QueueItem) -> dict[str, Any]:
    data = asdict(item)
    data["requested_at"] = _time(item.requested_at)
    data["reason_label"] = REASON_LABELS.get(item.reason, item.reason)
    return data


def turn_json(turn: TurnView) -> dict[str, Any]:
    return {"id": turn.id, "speaker": turn.speaker, "speaker_label": SPEAKER_LABELS.get(turn.speaker, turn.speaker),
            "text": turn.text, "intent": turn.intent, "at": _time(turn.at)}


def agent_case_json(popped: AgentCase) -> dict[str, Any]:
    case = popped.case
    return {
        "item": item_json(popped.item),
        "call_live": popped.call_live,
        "callback_phone": popped.callback_phone,
        "case": None if case is None else {
            "folio": case.folio, "status": case.status, "status_label": case.status_label,
            "tramite": case.tramite.name, "agency": case.tramite.agency, "version": case.version,
            "citizen_name": case.citizen_name, "citizen_curp": mask_curp(case.citizen_curp) if case.citizen_curp
            else None, "citizen_phone": case.citizen_phone, "missing": list(case.missing),
            "appointment": (f"{case.appointment_office} {_time(case.appointment_at)}"
                            if case.appointment_at else None),
            "history": [{"status": h.label, "note": h.note, "channel": h.channel, "at": _time(h.at)}
                        for h in case.history],
            "interactions": [{"channel": i.channel_label, "direction": i.direction, "outcome": i.outcome,
                              "summary": i.summary, "at": _time(i.started_at)} for i in case.interactions],
        },
        "transcript": [turn_json(t) for t in popped.transcript],
        "notes": [{"id": n.id, "author": n.author, "text": n.text, "at": _time(n.at)} for n in popped.notes],
    }


async def _case_json(request: web.Request, popped: AgentCase) -> dict[str, Any]:
    """The taken call and, when it has a case, that case's callbacks (state, attempts) for the console."""
    data = agent_case_json(popped)
    data["callbacks"] = [] if popped.case is None else [
        callback_row(c) for c in await _desk_call(request, request.app[SERVICE].callbacks_for, popped.case.folio)]
    data["outbound_enabled"] = request.app[SETTINGS].outbound.enabled
    data["call_back"] = _call_back_refusal(request) is None and popped.case is not None and not popped.call_live
    return data


MAX_ID = 2**31 - 1               # ids are 32-bit integers in both databases: a longer one is unknown, not a 500


def _path_id(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except (KeyError, ValueError):
        raise web.HTTPNotFound(text="Llamada desconocida.") from None
    if not 0 < value <= MAX_ID:
        raise web.HTTPNotFound(text="Llamada desconocida.")
    return value


def _escalation_id(request: web.Request) -> int:
    return _path_id(request, "id")


def _http_error(exc: CaseBridgeError) -> web.HTTPException:
    text = str(exc) or "Solicitud no válida."
    if isinstance(exc, EscalationNotFound):
        return web.HTTPNotFound(text="Llamada desconocida.")
    if isinstance(exc, NotYours):
        return web.HTTPForbidden(text=text)
    if isinstance(exc, AlreadyTaken | StaleCase):
        return web.HTTPConflict(text=text)
    if isinstance(exc, EscalationClosed):
        return web.HTTPGone(text=text)
    if isinstance(exc, InvalidInput):
        return web.HTTPBadRequest(text=text)
    return web.HTTPBadRequest(text=text)


async def _desk_call(request: web.Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except DatabaseUnavailable:
        raise                                        # the app's error middleware answers 503
    except CaseBridgeError as exc:
        raise _http_error(exc) from exc


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = jsonbody.parse(await request.read())    # size bounded by the app's client_max_size (413)
    except jsonbody.BadJson as exc:
        raise web.HTTPBadRequest(text=f"Se esperaba JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="Se esperaba un objeto JSON.")
    return body


# ---- page -------------------------------------------------------------------------------------------------------
@routes.get("/agente", name="agent_home")
@require_role("agent")
@aiohttp_jinja2.template("agent_console.html")
async def console(request: web.Request) -> dict[str, object]:
    return {"dispositions": list(AGENT_DISPOSITIONS.items()),
            "statuses": [(s, STATUS_LABELS[s]) for s in STATUSES], "agent": request[STAFF].username}


# ---- API --------------------------------------------------------------------------------------------------------
@routes.get("/api/agente/cola")
@require_role("agent")
async def queue(request: web.Request) -> web.Response:
    items = await _desk_call(request, request.app[DESK].queue)
    return web.json_response({"items": [item_json(i) for i in items], "me": request[STAFF].username,
                              "call_back": _call_back_refusal(request) is None})


@routes.post(r"/api/agente/llamadas/{id:\d+}/tomar")
@require_role("agent")
async def take(request: web.Request) -> web.Response:
    staff = request[STAFF]
    popped = await _desk_call(request, request.app[DESK].take, _escalation_id(request), staff.id)
    log.info(kv(event="agent_took_call", user=staff.username, escalation=popped.item.id,
                case=popped.item.folio or "-"))
    return web.json_response(await _case_json(request, popped))


@routes.get(r"/api/agente/llamadas/{id:\d+}")
@require_role("agent")
async def show(request: web.Request) -> web.Response:
    popped = await _desk_call(request, request.app[DESK].agent_case, _escalation_id(request), request[STAFF].id)
    return web.json_response(await _case_json(request, popped))


@routes.post(r"/api/agente/llamadas/{id:\d+}/devolver")
@require_role("agent")
async def schedule_callback(request: web.Request) -> web.Response:
    """The agent asks the node to call the citizen of the call they hold back, within a window, with a reason.
    The number is the one the caller left for a callback, else the case's; only the agent holding the call."""
    body = await _json_body(request)
    staff, settings = request[STAFF], request.app[SETTINGS]
    popped = await _desk_call(request, request.app[DESK].agent_case, _escalation_id(request), staff.id)
    if popped.case is None:
        raise web.HTTPBadRequest(text="Esta llamada no tiene caso: no hay a quién avisar.")
    try:
        start, end = parse_window(str(body.get("day", "")), str(body.get("from", "")), str(body.get("to", "")))
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    view = await _desk_call(request, request.app[SERVICE].schedule_callback, popped.case.folio,
                            popped.callback_phone, start=start, end=end, note=str(body.get("note", ""))[:400],
                            requested_by=staff.username, reason="agent_callback",
                            allowed_prefixes=settings.outbound.allowed_prefixes, schedule=settings.outbound.callback)
    log.info(kv(event="agent_scheduled_callback", user=staff.username, escalation=popped.item.id,
                case=popped.case.folio, job=view.id, state=view.state))
    if view.state in ("invalid", "opted_out"):
        raise web.HTTPBadRequest(text="Ese número pidió no recibir llamadas." if view.state == "opted_out" else
                                 "El número del caso no se puede marcar (fuera del plan de marcación).")
    return web.json_response(callback_row(view), status=201)


def _job_id(request: web.Request) -> int:
    return _path_id(request, "job")


def _call_back_refusal(request: web.Request) -> str | None:
    """Why this agent cannot use "Llamar de vuelta" here (None: they can)."""
    settings, staff = request.app[SETTINGS], request[STAFF]
    if not settings.outbound.enabled:
        return "Las llamadas salientes están desactivadas en este nodo (outbound.enabled)."
    if not settings.escalation.agent_uris.get(staff.username):
        return ("Su usuario no tiene un teléfono configurado (escalation.agent_uris): no hay a dónde pasarle la "
                "llamada.")
    return None


@routes.post(r"/api/agente/llamadas/{id:\d+}/llamar-de-vuelta")
@require_role("agent")
async def call_back_now(request: web.Request) -> web.Response:
    """"Llamar de vuelta": the node calls the citizen of this queued item now and, when they confirm, passes the
    call to this agent's own phone with the case attached (ivr.agent_callback). Takes the item if nobody has
    it. The number is the one the caller left for a callback, else the case's. A second click returns the same
    job (200 instead of 201)."""
    staff, settings = request[STAFF], request.app[SETTINGS]
    refusal = _call_back_refusal(request)
    if refusal is not None:
        raise web.HTTPBadRequest(text=refusal)
    desk, esc_id = request.app[DESK], _escalation_id(request)
    popped = await _desk_call(request, desk.take, esc_id, staff.id)     # a no-op when it is already this agent's
    if popped.call_live:
        raise web.HTTPBadRequest(text="La llamada sigue en curso: atiéndala en la línea.")
    if popped.case is None:
        raise web.HTTPBadRequest(text="Esta llamada no tiene caso: no hay número ni caso que pasarle al agente.")
    view, created = await _desk_call(request, request.app[SERVICE].request_agent_return, popped.case.folio,
                                     popped.callback_phone, agent=staff.username,
                                     allowed_prefixes=settings.outbound.allowed_prefixes)
    log.info(kv(event="agent_call_back", user=staff.username, escalation=popped.item.id, case=popped.case.folio,
                job=view.id, state=view.state, created=created))
    if view.state in ("invalid", "opted_out"):
        raise web.HTTPBadRequest(text="Ese número pidió no recibir llamadas." if view.state == "opted_out" else
                                 "El número no se puede marcar (fuera del plan de marcación).")
    data = await _case_json(request, popped)
    data["callback"], data["created"] = callback_row(view), created
    return web.json_response(data, status=201 if created else 200)


@routes.post(r"/api/agente/devoluciones/{job:\d+}/reintentar")
@require_role("agent")
async def retry_call_back(request: web.Request) -> web.Response:
    refusal = _call_back_refusal(request)
    if refusal is not None:
        raise web.HTTPBadRequest(text=refusal)
    staff = request[STAFF]
    view = await _desk_call(request, request.app[SERVICE].retry_agent_return, _job_id(request), staff.username,
                            pacing_s=request.app[SETTINGS].outbound.pacing_s)
    log.info(kv(event="agent_call_back_retry", user=staff.username, job=view.id, state=view.state))
    if view.state == "opted_out":
        raise web.HTTPBadRequest(text="Ese número pidió no recibir llamadas.")
    return web.json_response(callback_row(view))


@routes.post(r"/api/agente/devoluciones/{job:\d+}/cancelar")
@require_role("agent")
async def cancel_call_back(request: web.Request) -> web.Response:
    staff = request[STAFF]
    view = await _desk_call(request, request.app[SERVICE].cancel_agent_return, _job_id(request), staff.username)
    log.info(kv(event="agent_call_back_cancel", user=staff.username, job=view.id, state=view.state))
    return web.json_response(callback_row(view))


@routes.post(r"/api/agente/llamadas/{id:\d+}/notas")
@require_role("agent")
async def add_note(request: web.Request) -> web.Response:
    body = await _json_body(request)
    note = await _desk_call(request, request.app[DESK].add_note, _escalation_id(request), request[STAFF].id,
                            str(body.get("text", ""))[:4000])
    return web.json_response({"id": note.id, "author": note.author, "text": note.text, "at": _time(note.at)},
                             status=201)


@routes.post(r"/api/agente/llamadas/{id:\d+}/cerrar")
@require_role("agent")
async def close(request: web.Request) -> web.Response:
    body = await _json_body(request)
    status = body.get("status") or None
    version = body.get("version")
    if version is not None and not isinstance(version, int):
        raise web.HTTPBadRequest(text="versión no válida")
    closed = await _desk_call(request, request.app[DESK].close, _escalation_id(request), request[STAFF].id,
                              str(body.get("disposition", "")), status=str(status) if status else None,
                              status_note=str(body.get("note", ""))[:500], expected_version=version)
    return web.json_response(item_json(closed))


# ---- live transcript --------------------------------------------------------------------------------------------
def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True                                  # not a browser: the session cookie is still required
    host = request.headers.get("Host", "")
    return origin.split("://", 1)[-1] == host


@routes.get(r"/api/agente/llamadas/{id:\d+}/ws")
@require_role("agent")
async def transcript_socket(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        raise web.HTTPForbidden(text="origen no permitido")
    desk, staff, esc_id = request.app[DESK], request[STAFF], _escalation_id(request)
    try:
        after = max(0, int(request.query.get("after", "0")))
    except ValueError:
        after = 0
    # ownership and existence are checked before the upgrade, so a refusal is a plain HTTP error
    pending = await _desk_call(request, desk.transcript, esc_id, staff.id, after)
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S)
    await ws.prepare(request)
    log.info(kv(event="agent_ws_open", user=staff.username, escalation=esc_id))
    reader = asyncio.create_task(_drain(ws), name=f"agent-ws-read-{esc_id}")
    live: bool | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_SOCKET_S
    try:
        while not ws.closed and not reader.done() and loop.time() < deadline:
            for turn in pending:
                await ws.send_json({"type": "turn", **turn_json(turn)})
                after = turn.id
            now_live = await asyncio.to_thread(desk.call_live, esc_id)
            if now_live != live:
                live = now_live
                await ws.send_json({"type": "call", "live": live})
            await asyncio.wait({reader}, timeout=POLL_S)
            try:
                pending = await asyncio.to_thread(desk.transcript, esc_id, staff.id, after)
            except (EscalationClosed, NotYours, EscalationNotFound):
                await ws.send_json({"type": "closed"})
                break
    except (ConnectionResetError, RuntimeError):
        pass                                         # the browser went away mid-send
    finally:
        reader.cancel()
        await ws.close()
        log.info(kv(event="agent_ws_closed", user=staff.username, escalation=esc_id))
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the browser sends, so pings/close frames are handled; ends when the socket does."""
    async for message in ws:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
