"""`veratur web`: the node's one aiohttp application — citizen portal, office clerk pages, Open311 API, and the
pages other packages plug in (agent console, admin).

Adding pages: write a module with `setup(app: web.Application) -> None` that adds its routes (and, if it has
templates, a module constant `TEMPLATES_DIR: Path`), then add its dotted name to `ROUTE_MODULES`. Templates can
`{% extends "base.html" %}`; handlers reach the service as `request.app[SERVICE]`, protect themselves with
`@require_role("agent")` / `@require_role("admin")`, and forms carry `<input type="hidden" name="_csrf"
value="{{ csrf_token }}">` (or send the `X-CSRF-Token` header from JS). See `case_bridge/web/security.py`.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import importlib
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from case_bridge import folio as folios
from case_bridge.db import make_engine
from case_bridge.errors import DatabaseUnavailable
from case_bridge.migrate import upgrade
from case_bridge.service import CaseService
from case_bridge.views import CHANNEL_LABELS, LOCAL_TZ
from case_bridge.web.revocations import Revocations
from case_bridge.web.security import (
    REVOCATIONS,
    SERVICE,
    SESSION,
    SESSION_TTL_S,
    SETTINGS,
    SIGNER,
    LazyCsrfToken,
    SessionSigner,
    csrf_middleware,
    headers_middleware,
    load_secret,
    session_middleware,
    session_of,
)
from foundation.config import Settings
from foundation.logs import kv, scrub
from veratur import access_log, registrations

log = logging.getLogger("veratur.web")

ROUTE_MODULES: tuple[str, ...] = (
    "case_bridge.web.staff",
    "case_bridge.web.portal",
    "case_bridge.web.clerk",
    "case_bridge.web.open311",
    "case_bridge.web.agent",      # call-center agent console, role agent
    "case_bridge.web.operations",  # role supervisor: dashboard, call records, live view, exports
    "case_bridge.web.kiosk",       # enrolled kiosks (/kiosco) and their enrolment (/admin/quioscos)
    "veratur.flows.web",            # role admin: dialog-flow administration
    "veratur.model_share",          # GET /rasa/model for the dialogue nodes (token or loopback only)
)
MAX_BODY_BYTES = 64 * 1024       # forms and JSON are small; larger bodies get 413 before being read
REGISTRATION_STATE_MAX_AGE_S = 30.0  # the supervisor rewrites the state every <= 5 s; older means it is gone
BASE_TEMPLATES = Path(__file__).resolve().parent.parent / "case_bridge" / "web" / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "case_bridge" / "web" / "static"
JSON_PREFIXES = ("/open311/", "/api/")


class ScrubbedAccessLogger(AbstractAccessLogger):
    """One line per request: method, path without its query string (it may hold a PIN or CURP), status, time."""

    @property
    def enabled(self) -> bool:
        # asked by aiohttp before `log`: below INFO no line is built at all (the abstract default says True)
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # the record made directly: `logger.info` also walks the stack for a caller no access line prints
        # (~4 of its ~12 us per request, docs/web-tier.md); handlers, filters and format are the logger's as before
        logger = self.logger
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, kv(
            method=request.method, path=scrub(request.path), status=response.status, ms=round(time * 1000, 1),
            ip=request.remote), (), None))


def _is_json(request: web.Request) -> bool:
    return request.path.startswith(JSON_PREFIXES)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """HTTP errors as JSON on the API paths and as a Spanish page elsewhere; a failure never shows a traceback."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await _error(request, exc.status, _message(exc), exc.headers)
    except DatabaseUnavailable:
        log.error(kv(event="db_unavailable", path=request.path))
        return await _error(request, 503, "El servicio no está disponible en este momento. Intente en unos minutos.")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(kv(event="web_error", path=request.path))
        return await _error(request, 500, "Ocurrió un error inesperado. Intente de nuevo.")


def _message(exc: web.HTTPException) -> str:
    if exc.status == 413:
        return "La solicitud es demasiado grande."
    if exc.status == 404 and (exc.text or "").startswith("404"):
        return "La página no existe."
    if exc.status == 405:
        return "Método no permitido."
    return exc.text or exc.reason


async def _error(request: web.Request, status: int, message: str, headers: Any = None) -> web.Response:
    keep = {k: v for k, v in (headers or {}).items() if k in ("Retry-After", "Allow", "Location")}
    if _is_json(request):
        return web.json_response([{"code": status, "description": message}], status=status, headers=keep,
                                 dumps=lambda o: json.dumps(o, ensure_ascii=False))
    try:
        # errors raised before the template middleware ran have no template context yet: build it here
        ctx = {**(await _context(request)), "status": status, "message": message}
        response = aiohttp_jinja2.render_template("error.html", request, ctx)
    except Exception:   # the page itself failed: plain text is enough
        log.exception(kv(event="error_page_failed", status=status))
        response = web.Response(text=f"{status}: {message}")
    response.set_status(status)
    response.headers.update(keep)
    return response


def _local(value: datetime | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
    return value.astimezone(LOCAL_TZ).strftime(fmt) if value else ""


async def _context(request: web.Request) -> dict[str, Any]:
    has_session = SESSION in request
    staff = session_of(request).get("staff") if has_session else None
    return {"csrf_token": LazyCsrfToken(request) if has_session else "", "staff_session": staff,
            "channel_labels": CHANNEL_LABELS}


async def healthz(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    body: dict[str, Any] = {"status": "ok", "database": "ok"}
    settings = request.app[SETTINGS]
    if settings.sip.registrations:
        # Written by the supervisor (veratur.registrations); a registration down degrades, it does not fail.
        state = registrations.read_state_file(settings, REGISTRATION_STATE_MAX_AGE_S)
        regs: dict[str, Any] = state["registrations"] if state else {  # type: ignore[assignment]
            r.name: {"state": "unknown"} for r in settings.sip.registrations}
        body["registrations"] = regs
        if any(item.get("state") != "registered" for item in regs.values()):
            body["status"] = "degraded"
    try:
        await asyncio.to_thread(svc.list_tramites)
    except DatabaseUnavailable:
        return web.json_response({**body, "status": "degraded", "database": "unreachable"}, status=503)
    return web.json_response(body)


def build_app(settings: Settings, service: CaseService | None = None, *, secret: bytes | None = None,
              route_modules: tuple[str, ...] = ROUTE_MODULES) -> web.Application:
    """The whole web app. `service` defaults to one built from the settings (closed with the app)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[headers_middleware, error_middleware, session_middleware, csrf_middleware])
    owned = service is None
    app[SERVICE] = service or CaseService.from_settings(settings)
    app[SETTINGS] = settings
    product = settings.sip.user_agent

    async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
        # Every response (errors, redirects, static files too): the product string, no Python/aiohttp versions.
        response.headers["Server"] = product
    app.on_response_prepare.append(_server_header)
    app[SIGNER] = SessionSigner(secret or load_secret(settings.path(settings.web.secret_key_file)))
    limiter = app[SERVICE].limiter
    app[REVOCATIONS] = Revocations(limiter.redis_url, limiter.prefix, SESSION_TTL_S)

    async def _close_revocations(app: web.Application) -> None:
        app[REVOCATIONS].close()
    app.on_cleanup.append(_close_revocations)
    modules = [importlib.import_module(name) for name in route_modules]
    template_dirs = [str(m.TEMPLATES_DIR) for m in modules if getattr(m, "TEMPLATES_DIR", None)]
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(d) for d in [str(BASE_TEMPLATES), *template_dirs]]),
        autoescape=jinja2.select_autoescape(default=True), context_processors=[_context],
        undefined=jinja2.StrictUndefined)
    env.filters["local"] = _local
    env.filters["folio"] = folios.display
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC_DIR, name="static")
    for module in modules:
        module.setup(app)
    if owned:
        async def _close(app: web.Application) -> None:
            await asyncio.to_thread(app[SERVICE].close)
        app.on_cleanup.append(_close)
    return app


def health_socket(settings: Settings, index: int) -> Path:
    """The private Unix socket web process `index` also serves (/healthz of that process, whichever process the
    shared port would hand a probe to)."""
    return settings.path(settings.data_dir) / "run" / f"web-{index}.sock"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default web.host)")
    parser.add_argument("--port", type=int, help="listen port (default web.port)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="share the port with other web processes (SO_REUSEPORT: the kernel spreads connections)")
    parser.add_argument("--index", type=int, default=None,
                        help="this process's number among the node's web processes: it also listens on "
                             "var/run/web-INDEX.sock for its supervisor's health probe")
    parser.add_argument("--no-migrate", action="store_true", help="do not apply migrations / load the catalog")
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None,
                        help="create the demo citizen and case and print its folio+PIN (default: only on the "
                             "embedded SQLite database)")


WEB_THREADS = 8
"""Threads of a web process for blocking service calls (every page but the PostgreSQL status lookup, which runs
on the loop); its database pool holds as many connections, so a thread never waits for one (docs/web-tier.md)."""


def _service(settings: Settings) -> CaseService:
    url = settings.database_url
    if url.startswith("sqlite"):
        return CaseService.from_settings(settings)
    return CaseService(make_engine(url, pool_size=WEB_THREADS, max_overflow=0), redis_url=settings.redis.url)


async def _threads(_app: web.Application) -> None:
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(WEB_THREADS, thread_name_prefix="web"))


async def _freeze_heap(_app: web.Application) -> None:
    # The ~150k objects of a started process (routes, templates, SQLAlchemy metadata, catalogs) live as long as
    # it does: out of the collector's sight, an occasional full collection no longer walks them all (91 ms
    # measured at load 5 on this VM: a stalled loop, the lookup's p99). Each request's young objects are
    # collected as before.
    gc.collect()
    gc.freeze()


def run(settings: Settings, args: argparse.Namespace) -> int:
    service = _service(settings)
    if not args.no_migrate:
        from dialogs.catalog_seed import seed_catalog, seed_demo

        upgrade(settings.database_url)
        count, source = seed_catalog(service)
        log.info(kv(event="catalog_loaded", tramites=count, source=source))
        demo = args.demo if args.demo is not None else settings.database_url.startswith("sqlite")
        if demo:
            folio, pin = seed_demo(service)
            # The only PIN ever printed or logged: the embedded demo case's, made up for trying the portal; a
            # citizen's PIN is shown once to that citizen and stored hashed.
            print(f"demo case: folio {folios.display(folio)} PIN {pin} (made-up demo data, not a citizen's; "
                  f"portal: consult it with these)", flush=True)
    app = build_app(settings, service)
    app.on_startup.append(_threads)
    app.on_startup.append(_freeze_heap)
    app.on_cleanup.append(lambda _app: asyncio.to_thread(service.close))
    host, port = args.host or settings.web.host, args.port or settings.web.port
    path = None
    if args.index is not None:
        path = str(health_socket(settings, args.index))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    log.info(kv(event="web_start", host=host, port=port, reuse_port=args.reuse_port, index=args.index))
    access = logging.getLogger("veratur.web.access")
    access_log.install(app, access)
    web.run_app(app, host=host, port=port, path=path, reuse_port=args.reuse_port or None,
                access_log_class=ScrubbedAccessLogger, print=None, access_log=access, loop=_new_loop())
    return 0


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (a third less CPU per request than asyncio's own loop, docs/web-tier.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


__all__ = ["ROUTE_MODULES", "build_app", "run"]
