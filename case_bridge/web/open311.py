"""REST API for kiosks and other systems, modeled on Open311 GeoReport v2 (JSON only).

    GET  /open311/v2/services.json                 the trámites (service_code = trámite id)
    POST /open311/v2/requests.json                 open a case; answers the folio (service_request_id) and PIN
    GET  /open311/v2/requests/{folio}.json         a case's status: needs its PIN (X-Veratur-PIN header or `pin`)
    GET  /open311/v2/openapi.json                  the OpenAPI 3 description of these endpoints

Differences from GeoReport v2, on purpose: cases are personal, so reading one needs its PIN (same lockout as the
portal); there is no location (trámites are not places); `Idempotency-Key` makes a retried POST return the
first answer instead of opening a second case; one client may open at most 60 per 15 minutes (429 after that).
Errors are `[{"code": N, "description": "..."}]` as in GeoReport.
"""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from case_bridge.errors import ChannelNotAllowed, InvalidInput, UnknownTramite
from case_bridge.status_lookup import StatusLookup
from case_bridge.views import CaseView, CitizenInfo, StatusResult, TramiteInfo
from case_bridge.web.security import SERVICE, client_key
from foundation import jsonbody

PREFIX = "/open311/v2"
MAX_JSON_BYTES = 16 * 1024
routes = web.RouteTableDef()
LOOKUP = web.AppKey("status_lookup", StatusLookup)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
    lookup = StatusLookup.for_service(app[SERVICE])
    if lookup is not None:     # PostgreSQL + Redis: the lookup runs on the event loop (no thread per request)
        app[LOOKUP] = lookup

        async def _close(_app: web.Application) -> None:
            await lookup.close()
        app.on_cleanup.append(_close)


def json_error(code: int, description: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response([{"code": code, "description": description}], status=code, headers=headers,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _service(t: TramiteInfo) -> dict[str, Any]:
    return {"service_code": t.id, "service_name": t.name, "description": f"{t.name} ({t.agency})",
            "metadata": False, "type": "realtime", "keywords": "", "group": t.agency,
            "channels_start": list(t.start_channels), "channels_finish": list(t.finish_channels),
            "requirements": list(t.requirements)}


def _request(case: CaseView) -> dict[str, Any]:
    last = case.history[-1] if case.history else None
    return {"service_request_id": case.folio, "status": "open" if case.is_open else "closed",
            "status_detail": case.status, "status_notes": case.status_label + (f": {last.note}" if last else ""),
            "service_name": case.tramite.name, "service_code": case.tramite.id,
            "agency_responsible": case.tramite.agency, "missing": list(case.missing),
            "requested_datetime": case.created_at.isoformat(), "updated_datetime": case.updated_at.isoformat()}


@routes.get(f"{PREFIX}/services.json")
async def services(request: web.Request) -> web.Response:
    tramites = await asyncio.to_thread(request.app[SERVICE].list_tramites)
    return _json([_service(t) for t in tramites])


# NUL and the other C0 controls (tab, CR and LF aside) are in no name, CURP or description, and PostgreSQL cannot
# store a NUL in text at all: a service_code "\u0000" gave a 500 (DataError) before this (property test, issue 13).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


async def _body(request: web.Request) -> dict[str, str]:
    body = await _fields(request)
    bad = sorted(name for name, value in body.items() if _CONTROL.search(name) or _CONTROL.search(value))
    if bad:
        raise InvalidInput("caracteres de control no permitidos en: " + ", ".join(repr(b[:40]) for b in bad[:5]))
    return body


async def _fields(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON_BYTES, actual_size=request.content_length)
    if request.content_type == "application/json":
        raw = await request.read()
        if len(raw) > MAX_JSON_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_JSON_BYTES, actual_size=len(raw))
        try:
            data = jsonbody.parse(raw)
        except jsonbody.BadJson as exc:
            raise InvalidInput(str(exc)) from None
        if not isinstance(data, dict):
            raise InvalidInput("el cuerpo debe ser un objeto JSON")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {k: str(v) for k, v in (await request.post()).items()}
    raise InvalidInput("Content-Type debe ser application/json o application/x-www-form-urlencoded")


@routes.post(f"{PREFIX}/requests.json")
async def create_request(request: web.Request) -> web.Response:
    limiter = request.app[SERVICE].limiter
    limit_key = f"open:{client_key(request)}"
    lock = await asyncio.to_thread(limiter.check, limit_key)
    if lock.locked:
        return json_error(429, "demasiadas solicitudes desde este equipo; intente más tarde",
                          headers={"Retry-After": str(lock.retry_after_s)})
    try:
        body = await _body(request)
        code = body.get("service_code", "").strip()
        if not code:
            raise InvalidInput("falta service_code")
        name = " ".join(p for p in (body.get("first_name", "").strip(), body.get("last_name", "").strip()) if p)
        citizen = CitizenInfo(name[:200], curp=body.get("curp") or None, phone=body.get("phone") or None,
                              email=body.get("email") or None) if name else None
        channel = body.get("channel", "kiosk")
        if channel not in ("kiosk", "web", "office", "call_center"):
            raise InvalidInput("channel: kiosk, web, office o call_center")
        key = request.headers.get("Idempotency-Key")
        opened = await asyncio.to_thread(request.app[SERVICE].open_case, code, channel, citizen=citizen,
                                         idempotency_key=f"open311:{key}" if key else None,
                                         summary=body.get("description", "")[:1000])
    except UnknownTramite:
        return json_error(404, "service_code desconocido")
    except (InvalidInput, ChannelNotAllowed) as exc:
        return json_error(400, str(exc))
    finally:
        await asyncio.to_thread(limiter.hit, limit_key)   # every attempt counts, good or bad
    return _json([{"service_request_id": opened.case.folio, "pin": opened.pin, "token": None,
                   "service_notice": "Conserve su folio y PIN para continuar por teléfono, web u oficina.",
                   "account_id": None}], status=201 if opened.created else 200)


_SCHEMA_FOLIO = re.compile(r"^[0-9]{8}$")      # the OpenAPI pattern of the folio path parameter


@routes.get(PREFIX + "/requests/{folio}.json")
async def get_request(request: web.Request) -> web.Response:
    pin = request.headers.get("X-Veratur-PIN") or request.query.get("pin", "")
    if not pin:
        return json_error(401, "se necesita el PIN del folio (cabecera X-Veratur-PIN)")
    lookup = request.app.get(LOOKUP)
    result: StatusResult
    if lookup is not None:
        result = await lookup.status(request.match_info["folio"], pin=pin[:20], client=client_key(request))
    else:
        result = await asyncio.to_thread(request.app[SERVICE].status_for, request.match_info["folio"],
                                         pin=pin[:20], client=client_key(request), timeline=False)
    if result.throttle_s:               # many recent failures from this address: slowed, never refused
        await asyncio.sleep(result.throttle_s)
    if result.reason == "malformed":
        if _SCHEMA_FOLIO.fullmatch(request.match_info["folio"]):
            # Valid by the OpenAPI pattern, wrong check digit (a pattern cannot express Damm): as documented there,
            # answered like an unknown folio, so generated clients see no 400 for a schema-valid request.
            return json_error(404, "el folio y el PIN no coinciden")
        return json_error(400, f"folio mal formado: {result.message}")
    if result.reason == "locked":
        return json_error(429, "demasiados intentos; intente más tarde",
                          headers={"Retry-After": str(result.retry_after_s or 900)})
    if result.case is None:
        return json_error(404, "el folio y el PIN no coinciden")
    return _json([_request(result.case)])


@routes.get(f"{PREFIX}/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return _json(OPENAPI)


_ERROR = {"type": "array", "items": {"type": "object", "properties": {
    "code": {"type": "integer"}, "description": {"type": "string"}}}}
_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Veratur — API de trámites (estilo Open311 GeoReport v2)", "version": "1.0.0",
             "description": "Consultar trámites, abrir casos desde quioscos y consultar su estado con folio y PIN."},
    "paths": {
        f"{PREFIX}/services.json": {"get": {
            "summary": "Trámites disponibles", "operationId": "listServices",
            "responses": {"200": {"description": "lista de trámites", "content": {"application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}}}}}}}},
        f"{PREFIX}/requests.json": {"post": {
            "summary": "Abrir un caso", "operationId": "createRequest",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "maxLength": 180},
                            "description": "reintentos con la misma clave devuelven el mismo folio"}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/NewRequest"}},
                "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/NewRequest"}}}},
            "responses": {"201": {"description": "caso abierto (200 si la clave ya se usó)", "content": {
                "application/json": {"schema": {"type": "array", "items": {
                    "$ref": "#/components/schemas/Created"}}}}},
                "400": _ERR, "404": _ERR, "413": _ERR}}},
        PREFIX + "/requests/{folio}.json": {"get": {
            "summary": "Estado de un caso", "operationId": "getRequest",
            "parameters": [
                {"name": "folio", "in": "path", "required": True,
                 "description": "8 dígitos; el último es un dígito verificador Damm. Un folio con el verificador "
                                "equivocado se contesta 404, como uno que no existe; otro formato, 400.",
                 "schema": {"type": "string", "pattern": _SCHEMA_FOLIO.pattern}},
                {"name": "X-Veratur-PIN", "in": "header", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "el caso", "content": {"application/json": {"schema": {
                "type": "array", "items": {"$ref": "#/components/schemas/Request"}}}}},
                "400": _ERR, "401": _ERR, "404": _ERR, "429": _ERR}}},
    },
    "components": {"schemas": {
        "Errors": _ERROR,
        "Service": {"type": "object", "properties": {
            "service_code": {"type": "string"}, "service_name": {"type": "string"},
            "description": {"type": "string"}, "group": {"type": "string"}, "type": {"type": "string"},
            "channels_start": {"type": "array", "items": {"type": "string"}},
            "channels_finish": {"type": "array", "items": {"type": "string"}},
            "requirements": {"type": "array", "items": {"type": "string"}}}},
        "NewRequest": {"type": "object", "required": ["service_code"], "properties": {
            "service_code": {"type": "string"}, "first_name": {"type": "string"}, "last_name": {"type": "string"},
            "curp": {"type": "string", "minLength": 18, "maxLength": 18}, "phone": {"type": "string"},
            "email": {"type": "string"}, "description": {"type": "string"},
            "channel": {"type": "string", "enum": ["kiosk", "web", "office", "call_center"], "default": "kiosk"}}},
        "Created": {"type": "object", "properties": {
            "service_request_id": {"type": "string"}, "pin": {"type": "string"},
            "service_notice": {"type": "string"}}},
        "Request": {"type": "object", "properties": {
            "service_request_id": {"type": "string"}, "status": {"type": "string", "enum": ["open", "closed"]},
            "status_detail": {"type": "string"}, "status_notes": {"type": "string"},
            "service_name": {"type": "string"}, "service_code": {"type": "string"},
            "agency_responsible": {"type": "string"}, "missing": {"type": "array", "items": {"type": "string"}},
            "requested_datetime": {"type": "string", "format": "date-time"},
            "updated_datetime": {"type": "string", "format": "date-time"}}},
    }},
}
