"""Staff sign-in and sign-out, shared by clerks, call-center agents and administrators."""
from __future__ import annotations

import asyncio
import logging

import aiohttp_jinja2
from aiohttp import web

from case_bridge.web.security import REVOCATIONS, SERVICE, client_key, current_staff, sign_in, sign_out
from foundation.logs import kv

log = logging.getLogger("case_bridge.web.staff")
routes = web.RouteTableDef()

# Where each role lands after signing in; the agent console and admin register their own pages at these paths.
HOME_BY_ROLE = {"clerk": "/oficina", "agent": "/agente", "supervisor": "/supervision", "admin": "/admin"}


def setup(app: web.Application) -> None:
    app.add_routes(routes)


def _safe_next(target: str) -> str | None:
    """Only a local path: never an open redirect to another site."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@routes.get("/staff/login", name="staff_login")
@aiohttp_jinja2.template("staff_login.html")
async def login_page(request: web.Request) -> dict[str, object]:
    return {"next": _safe_next(request.query.get("next", "")) or "", "error": ""}


@routes.post("/staff/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username = str(form.get("usuario", "")).strip()[:64]
    password = str(form.get("contrasena", ""))[:200]
    target = _safe_next(str(form.get("next", "")))
    svc = request.app[SERVICE]
    # OWASP authentication guidance: no hard lock an outsider can trigger on someone's account. Failures count
    # per account *and address* (10 lock that pair for 15 min, not the account everywhere) and per address across
    # usernames (30: spraying). A lock refuses without checking the password.
    address = client_key(request)
    pair, source = f"login:{username.lower()}@{address}", f"login-from:{address}"
    locks = await asyncio.to_thread(svc.limiter.check_many, [pair, source])
    locked = next((name for name, lock in zip(("account_address", "address"), locks, strict=True)
                   if lock.locked), None)
    staff = None if locked else await asyncio.to_thread(svc.authenticate, username, password)
    if staff is None:
        if locked:
            log.warning(kv(event="staff_login_throttled", by=locked, user=username[:32], ip=request.remote))
        else:
            now_locked = [await asyncio.to_thread(svc.limiter.fail, key) for key in (pair, source)]
            if any(lock.locked for lock in now_locked):
                log.warning(kv(event="staff_login_lock_set", user=username[:32], ip=request.remote,
                               failures=max(lock.failures for lock in now_locked)))
        log.info(kv(event="staff_login_refused", ip=request.remote))
        response = aiohttp_jinja2.render_template("staff_login.html", request, {
            "next": target or "", "error": "Usuario o contraseña incorrectos, o cuenta bloqueada temporalmente."})
        response.set_status(401)
        return response
    await asyncio.to_thread(svc.limiter.succeed, pair)
    sign_in(request, staff)
    log.info(kv(event="staff_login", user=staff.username, role=staff.role))
    raise web.HTTPSeeOther(target or HOME_BY_ROLE.get(staff.role, "/"))


@routes.post("/staff/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    staff = await current_staff(request)
    sign_out(request)
    if staff:
        revocations = request.app.get(REVOCATIONS)
        if revocations is not None:     # a copy of the cookie must not outlive the logout
            await asyncio.to_thread(revocations.end_all, staff.id)
        log.info(kv(event="staff_logout", user=staff.username))
    raise web.HTTPSeeOther("/staff/login")
