"""Operations pages for the call-center supervisor and administrators (role supervisor; admin passes too):
the dashboard, call search and call detail, the live view, CSV exports and the JSON API for other systems.

Dates in forms and the API are local Veracruz days (`desde` inclusive, `hasta` inclusive) or ISO-8601 instants
(`since`/`until`, API). Callers are always masked (the service only stores the masked form and a hash).
"""
from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from case_bridge import folio as folios
from case_bridge.analytics import Dashboard
from case_bridge.call_records import MAX_PAGE, CallDetail, CallQuery
from case_bridge.errors import InvalidInput
from case_bridge.views import LOCAL_TZ
from case_bridge.web import charts
from case_bridge.web.security import SERVICE, SETTINGS, require_role
from foundation import node_state
from foundation.logs import scrub
from foundation.vocabulary import DISPOSITIONS

routes = web.RouteTableDef()

DEFAULT_DAYS = 7
MAX_DAYS = 400
DISPOSITION_LABELS = {"completed": "Resuelta", "transferred": "Transferida", "transfer_failed": "Transferencia fallida",
                      "abandoned": "Abandonada", "error": "Error", "lost": "Perdida", "in_progress": "En curso"}
# the search form's Spanish values and the API's English ones; "" = both directions
DIRECTION_PARAM: dict[str, str | None] = {"": None, "entrante": "inbound", "saliente": "outbound",
                                          "inbound": "inbound", "outbound": "outbound"}
CALLBACK_OUTCOME_LABELS = {"answered": "Contestó", "busy": "Ocupado", "no_answer": "No contestó",
                           "silent": "Contestó sin responder (buzón o silencio)",
                           "opt_out": "Pidió no recibir llamadas", "failed": "Falló"}
CHANNEL_NAMES = {"web": "Portal web", "office": "Oficina", "call_center": "Agente", "kiosk": "Quiosco"}
CSV_COLUMNS = ("call_id", "started_at", "answered_at", "ended_at", "duration_s", "caller", "node", "worker",
               "disposition", "folio", "tramite_id", "turns", "speech_turns", "dtmf_turns", "no_match", "no_input",
               "barge_ins", "latency_p50_ms", "latency_max_ms", "transfer_target", "transfer_reason", "intents",
               "direction", "asr_holds", "asr_dropped")   # appended last: a spreadsheet that reads columns by
                                                           # position keeps working
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def setup(app: web.Application) -> None:
    app.add_routes(routes)


# -- input ------------------------------------------------------------------------------------------------------
def _day(text: str, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise web.HTTPBadRequest(text="Fecha no válida: use AAAA-MM-DD.") from None


def _period(request: web.Request) -> tuple[date, date, datetime, datetime]:
    today = datetime.now(LOCAL_TZ).date()
    last = _day(request.query.get("hasta", ""), today)
    first = _day(request.query.get("desde", ""), last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        first, last = last, first
    if (last - first).days > MAX_DAYS:
        raise web.HTTPBadRequest(text=f"El periodo puede abarcar a lo más {MAX_DAYS} días.")
    since = datetime.combine(first, time(0), LOCAL_TZ).astimezone(UTC)
    until = datetime.combine(last + timedelta(days=1), time(0), LOCAL_TZ).astimezone(UTC)
    return first, last, since, until


def _instant(text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise web.HTTPBadRequest(text="since/until: ISO-8601 (2026-12-01 or 2026-12-01T08:00:00-06:00)") from None
    return value.replace(tzinfo=LOCAL_TZ) if value.tzinfo is None else value


def _query(request: web.Request, since: datetime | None, until: datetime | None) -> CallQuery:
    q = request.query
    disposition = q.get("disposicion", q.get("disposition", "")).strip() or None
    if disposition and disposition not in DISPOSITIONS:
        raise web.HTTPBadRequest(text="Disposición no válida.")
    direction = DIRECTION_PARAM.get(q.get("direccion", q.get("direction", "")).strip(), "?")
    if direction == "?":
        raise web.HTTPBadRequest(text="Dirección no válida: entrante o saliente.")
    folio = q.get("folio", "").strip() or None
    if folio:
        try:
            folio = folios.normalize(folio)
        except folios.MalformedFolio:
            raise web.HTTPBadRequest(text="Folio no válido.") from None
    return CallQuery(since=since, until=until, disposition=disposition, folio=folio,
                     intent=(q.get("intencion", q.get("intent", "")).strip()[:100] or None),
                     text=(q.get("texto", q.get("text", "")).strip()[:100] or None),
                     worker=(q.get("worker", "").strip()[:64] or None), direction=direction,
                     degraded=q.get("saturadas", q.get("degraded", "")).strip() in ("1", "on", "true", "si", "sí"))


def _int(text: str, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(text), low), high)
    except ValueError:
        return default


def _no_store(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Cache-Control"] = "no-store"
    return response


# -- dashboard --------------------------------------------------------------------------------------------------
def _charts(d: Dashboard) -> dict[str, Any]:
    days = [x for x, _, _ in d.latency_by_day]
    return {
        "per_day": charts.bars("Llamadas recibidas por día", d.per_day, every=max(1, len(d.per_day) // 10)),
        "per_hour": charts.bars("Llamadas recibidas por hora del día", [(f"{h:02d}", n) for h, n in d.per_hour],
                                every=3),
        "outcomes": charts.hbars("Resultado de las llamadas recibidas",
                                 [(DISPOSITION_LABELS.get(k, k), v) for k, v in sorted(d.dispositions.items())]),
        "callbacks": charts.hbars("Resultado de los intentos de devolución de llamada",
                                  [(CALLBACK_OUTCOME_LABELS.get(k, k), n) for k, n in _callback_rows(d)]),
        "reasons": charts.hbars("Motivos de transferencia", d.transfer_reasons),
        "intents": charts.hbars("Intenciones más frecuentes", d.top_intents),
        "tramites": charts.hbars("Trámites más consultados", d.top_tramites),
        "cities": charts.hbars("Ciudades más consultadas", d.top_cities),
        "lost": charts.hbars("Pasos donde se pierden (no entendido + sin respuesta)",
                             [(s.step, s.lost_rate * 100) for s in d.lost_steps], fmt=lambda v: f"{v:.0f} %"),
        "cross": charts.hbars("Casos del teléfono continuados en otro canal",
                              [(CHANNEL_NAMES.get(c, c), n) for c, n in sorted(d.cross_channel.continued.items())]),
        "latency": charts.lines("Latencia por turno (ms)", days, [("p50", [p for _, p, _ in d.latency_by_day]),
                                                                  ("p95", [p for _, _, p in d.latency_by_day])]),
        "confidence": charts.bars("Confianza del reconocimiento de voz",
                                  [(f"{lo:.1f}", n) for lo, n in d.confidence_bins]),
    }


def _callback_rows(d: Dashboard) -> list[tuple[str, int]]:
    """The outbound attempts by outcome, in the order a supervisor reads them (answered first), then any other."""
    known = [(k, d.outbound.outcomes[k]) for k in CALLBACK_OUTCOME_LABELS if d.outbound.outcomes.get(k)]
    return known + sorted((k, n) for k, n in d.outbound.outcomes.items() if k not in CALLBACK_OUTCOME_LABELS and n)


@routes.get("/supervision", name="ops_dashboard")
@require_role("supervisor")
async def dashboard(request: web.Request) -> web.StreamResponse:
    first, last, since, until = _period(request)
    d = await asyncio.to_thread(request.app[SERVICE].dashboard, since, until)
    response = aiohttp_jinja2.render_template("ops_dashboard.html", request, {
        "d": d, "first": first.isoformat(), "last": last.isoformat(), "charts": _charts(d), "pct": charts.percent,
        "labels": DISPOSITION_LABELS, "channel_names": CHANNEL_NAMES, "callback_rows": _callback_rows(d),
        "callback_labels": CALLBACK_OUTCOME_LABELS, "printable": request.query.get("imprimir") == "1"})
    return _no_store(response)


@routes.get("/supervision/mes")
@require_role("supervisor")
async def monthly(request: web.Request) -> web.StreamResponse:
    """The month's report: the dashboard for a calendar month, laid out for printing."""
    month = request.query.get("mes", "") or datetime.now(LOCAL_TZ).strftime("%Y-%m")
    try:
        first = date.fromisoformat(month[:7] + "-01")
    except ValueError:
        raise web.HTTPBadRequest(text="Mes no válido: use AAAA-MM.") from None
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    raise web.HTTPSeeOther(f"/supervision?desde={first.isoformat()}&hasta={last.isoformat()}&imprimir=1")


# -- calls ------------------------------------------------------------------------------------------------------
@routes.get("/supervision/llamadas")
@require_role("supervisor")
async def search(request: web.Request) -> web.StreamResponse:
    first, last, since, until = _period(request)
    query = _query(request, since, until)
    page_no = _int(request.query.get("pagina", "1"), 1, 1, 1_000_000)
    page = await asyncio.to_thread(request.app[SERVICE].search_calls, query, page=page_no, per_page=50)
    params = {k: v for k, v in request.query.items() if k != "pagina"}
    response = aiohttp_jinja2.render_template("ops_calls.html", request, {
        "page": page, "first": first.isoformat(), "last": last.isoformat(), "q": request.query,
        "dispositions": [(d, DISPOSITION_LABELS.get(d, d)) for d in DISPOSITIONS], "labels": DISPOSITION_LABELS,
        "directions": [("entrante", "Recibidas"), ("saliente", "Salientes (devoluciones)")],
        "params": params, "pages": (page.total + page.per_page - 1) // page.per_page})
    return _no_store(response)


@routes.get("/supervision/llamadas.csv")
@require_role("supervisor")
async def export_csv(request: web.Request) -> web.StreamResponse:
    first, last, since, until = _period(request)
    calls = await asyncio.to_thread(request.app[SERVICE].iter_calls, _query(request, since, until))
    rows = [[_cell(_csv_value(c, col)) for col in CSV_COLUMNS] for c in calls]
    return _csv_response([list(CSV_COLUMNS), *rows], f"llamadas_{first}_{last}.csv")


@routes.get("/supervision/llamadas/{call_id}")
@require_role("supervisor")
async def call_page(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICE]
    call_id = request.match_info["call_id"][:255]
    detail = await asyncio.to_thread(svc.call_detail, call_id)
    if detail is None:
        raise web.HTTPNotFound(text="No hay una llamada con ese identificador.")
    turns = await asyncio.to_thread(svc.transcript, call_id)
    if request.query.get("formato") == "csv":
        rows = [["at", "speaker", "text", "intent", "confidence"]] + [
            [_cell(t.at.isoformat()), _cell(t.speaker), _cell(scrub(t.text)), _cell(t.intent or ""),
             _cell("" if t.confidence is None else f"{t.confidence:.2f}")] for t in turns]
        return _csv_response(rows, "transcripcion.csv")
    response = aiohttp_jinja2.render_template("ops_call.html", request, {
        "c": detail, "turns": [(t, scrub(t.text)) for t in turns], "labels": DISPOSITION_LABELS})
    return _no_store(response)


# -- live -------------------------------------------------------------------------------------------------------
def _node_state(request: web.Request) -> node_state.NodeState | None:
    settings = request.app[SETTINGS]
    return node_state.read(node_state.state_file(settings.path(settings.data_dir)))


def _processes(state: node_state.NodeState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"node": state.node, "age_s": round(state.age_s, 1), "down": sum(not p.up for p in state.processes),
            "processes": [{"name": p.name, "up": p.up, "restarts": p.restarts, "up_for_s": p.up_for_s}
                          for p in state.processes]}


@routes.get("/supervision/en-vivo")
@require_role("supervisor")
async def live_page(request: web.Request) -> web.StreamResponse:
    live = await asyncio.to_thread(request.app[SERVICE].live_calls, _live_window(request))
    return _no_store(aiohttp_jinja2.render_template("ops_live.html", request, {
        "live": live, "node": _processes(_node_state(request))}))


@routes.get("/api/ops/live")
@require_role("supervisor")
async def live_api(request: web.Request) -> web.StreamResponse:
    live = await asyncio.to_thread(request.app[SERVICE].live_calls, _live_window(request))
    return _no_store(web.json_response({
        "calls": [{"call_id": c.call_id, "caller": c.caller, "node": c.node, "worker": c.worker,
                   "started_at": c.started_at.isoformat(), "folio": c.folio} for c in live.calls],
        "per_worker": live.per_worker, "queue_waiting": live.queue_waiting,
        "longest_wait_s": None if live.longest_wait_s is None else round(live.longest_wait_s, 1),
        "node": _processes(_node_state(request))}))


def _live_window(request: web.Request) -> float:
    # a call older than the longest a call may last is not live: its worker died before closing it
    return float(request.app[SETTINGS].turns.max_call_duration_s) + 60.0


# -- JSON API ---------------------------------------------------------------------------------------------------
@routes.get("/api/ops/calls")
@require_role("supervisor")
async def calls_api(request: web.Request) -> web.StreamResponse:
    since, until = _instant(request.query.get("since", "")), _instant(request.query.get("until", ""))
    page_no = _int(request.query.get("page", "1"), 1, 1, 1_000_000)
    per_page = _int(request.query.get("per_page", "100"), 100, 1, MAX_PAGE)
    try:
        page = await asyncio.to_thread(request.app[SERVICE].search_calls, _query(request, since, until),
                                       page=page_no, per_page=per_page)
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    return _no_store(web.json_response({"total": page.total, "page": page.page, "per_page": page.per_page,
                                        "calls": [c.as_dict() for c in page.calls]}))


# -- CSV --------------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    """A spreadsheet never evaluates a cell: text that starts like a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_value(c: CallDetail, column: str) -> Any:
    if column in ("turns", "no_match", "no_input"):
        return getattr(c, column)
    if column == "intents":
        return " ".join(c.intents)
    value = getattr(c, column)
    return value.isoformat() if isinstance(value, datetime) else value


def _csv_response(rows: list[list[str]], filename: str) -> web.Response:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    response = web.Response(body=("\ufeff" + buf.getvalue()).encode(), content_type="text/csv", charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
