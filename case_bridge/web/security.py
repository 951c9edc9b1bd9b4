"""What every page of the one aiohttp app shares: app keys, signed session cookie, CSRF, role checks, headers.

Other packages' pages (agent console, admin) use the same pieces:

    from case_bridge.web.security import SERVICE, STAFF, require_role, session_of, csrf_token
    @require_role("agent")                       # admins pass every role check
    async def queue(request): svc = request.app[SERVICE]; staff = request[STAFF]  # a StaffView

The session is a JSON object in an HMAC-SHA256-signed cookie (`vt_session`, HttpOnly, SameSite=Lax, Secure unless
the site is served over plain HTTP on a loopback address, as in development and tests), so web nodes stay
stateless. It holds the CSRF token, the signed-in staff user, and the one folio a citizen verified with its PIN.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from aiohttp import web

from case_bridge.service import CaseService
from case_bridge.views import StaffView
from case_bridge.web.revocations import Revocations
from foundation.config import Settings

SERVICE = web.AppKey("case_service", CaseService)
SETTINGS = web.AppKey("settings", Settings)

COOKIE = "vt_session"
SESSION_TTL_S = 8 * 3600         # a staff session ends this long after sign-in, however active
STAFF_IDLE_S = 30 * 60           # ... or after this long without a request
SEEN_REFRESH_S = 60              # the last-request time in the cookie is rewritten at most this often
CITIZEN_TTL_S = 30 * 60          # a verified folio stays open on the portal this long
CSRF_FIELD = "_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_EXEMPT_PREFIXES = ("/open311/",)   # token-less JSON API: no cookies are used there
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_secret(path: Path) -> bytes:
    """The key that signs session cookies: created (0600) on first start, then read. Several web processes may
    start at once: the key is written to a private temporary file and linked into place, so one key wins and no
    process can read a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):     # another process linked its key first: use that one
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


class SessionSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def dumps(self, data: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def loads(self, text: str) -> dict[str, Any] | None:
        body, _, mac = text.rpartition(".")
        if not body or not hmac.compare_digest(mac, hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or data.get("exp", 0) < time.time():
            return None
        return data


SIGNER = web.AppKey("session_signer", SessionSigner)


class Session(dict[str, Any]):
    """The request's session; setting a key marks it for writing back."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.changed = False

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.changed = True

    def pop(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.changed = True
        return super().pop(key, default)

    def clear(self) -> None:
        self.changed = True
        super().clear()


SESSION = web.RequestKey("session", Session)
REVOCATIONS = web.AppKey("session_revocations", Revocations)
STAFF = web.RequestKey("staff", StaffView)       # set by require_role for the handler


def session_of(request: web.Request) -> Session:
    return request[SESSION]


class LazyCsrfToken:
    """`{{ csrf_token }}` in a template: creates the token (and so the session cookie) only if a page uses it."""

    def __init__(self, request: web.Request) -> None:
        self._request = request

    def __str__(self) -> str:
        return csrf_token(self._request)

    def __html__(self) -> str:
        return str(self)


def csrf_token(request: web.Request) -> str:
    session = session_of(request)
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def rotate(request: web.Request) -> None:
    """New CSRF token at every sign-in/out (a token seen before authentication is worthless after)."""
    session_of(request)["csrf"] = secrets.token_urlsafe(24)


def _secure_cookie(request: web.Request) -> bool:
    if request.secure or request.headers.get("X-Forwarded-Proto") == "https":
        return True
    host = (request.url.host or "").strip("[]")
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    signer = request.app[SIGNER]
    raw = request.cookies.get(COOKIE)
    session = Session((signer.loads(raw) if raw else None) or {})
    request[SESSION] = session
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        if session.changed:
            _store(request, response, signer, session)
        raise
    if session.changed:
        _store(request, response, signer, session)
    return response


def _store(request: web.Request, response: web.StreamResponse, signer: SessionSigner, session: Session) -> None:
    if response.prepared:
        return
    data = dict(session)
    data["exp"] = time.time() + SESSION_TTL_S
    response.set_cookie(COOKIE, signer.dumps(data), httponly=True, samesite="Lax", secure=_secure_cookie(request),
                        path="/", max_age=SESSION_TTL_S)


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in SAFE_METHODS or request.path.startswith(CSRF_EXEMPT_PREFIXES):
        return await handler(request)
    expected = session_of(request).get("csrf")
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        given = str((await request.post()).get(CSRF_FIELD, ""))
    if not expected or not given or not hmac.compare_digest(str(expected), given):
        raise web.HTTPForbidden(text="La sesión del formulario expiró o no es válida. Vuelva a cargar la página.")
    return await handler(request)


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # redirects (and any HTTP exception passed on) get the same headers: a 302 to the login is a response too
        _security_headers(request, exc.headers)
        raise
    _security_headers(request, response.headers)
    return response


def _security_headers(request: web.Request, headers: MutableMapping[str, str]) -> None:
    headers.setdefault("Content-Security-Policy",
                       "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith(("/caso", "/oficina", "/staff", "/agente", "/admin", "/kiosco")):
        headers.setdefault("Cache-Control", "no-store")


def sign_in(request: web.Request, staff: StaffView) -> None:
    session = session_of(request)
    session.clear()
    now = time.time()
    session["staff"] = {"id": staff.id, "u": staff.username, "role": staff.role, "iat": now, "seen": now,
                        "cred": staff.credential_stamp}
    rotate(request)


def sign_out(request: web.Request) -> None:
    session_of(request).clear()
    rotate(request)


async def current_staff(request: web.Request) -> StaffView | None:
    """The signed-in staff user, re-read from the database (a disabled account loses access at once)."""
    import asyncio

    session = session_of(request)
    info = session.get("staff")
    if not isinstance(info, dict) or not isinstance(info.get("id"), int):
        return None
    now = time.time()
    issued, seen = info.get("iat"), info.get("seen")
    if not isinstance(issued, (int, float)) or not isinstance(seen, (int, float)) \
            or now - issued > SESSION_TTL_S or now - seen > STAFF_IDLE_S:
        return None                     # too old, idle too long, or from before sessions carried their times
    revocations = request.app.get(REVOCATIONS)
    if revocations is not None and issued <= await asyncio.to_thread(revocations.not_before, info["id"]):
        return None                     # logged out, or ended by an administrator, since this sign-in
    staff = await asyncio.to_thread(request.app[SERVICE].get_staff, info["id"])
    if staff is None or staff.role != info.get("role") or staff.credential_stamp != info.get("cred"):
        return None                     # deactivated, role changed, or password changed since this sign-in
    if now - seen > SEEN_REFRESH_S:
        session["staff"] = {**info, "seen": now}
    return staff


def require_role(*roles: str) -> Callable[[Handler], Handler]:
    """Only signed-in staff with one of `roles` (or admin) reach the handler; it finds `request[STAFF]`.
    Not signed in: redirect to the login page (403 JSON for API paths). Wrong role: 403."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            staff = await current_staff(request)
            if staff is None:
                if request.path.startswith("/api/") or request.headers.get("Upgrade", "").lower() == "websocket":
                    raise web.HTTPUnauthorized(text="inicie sesión")
                raise web.HTTPFound(f"/staff/login?next={request.path}")
            if staff.role not in roles and staff.role != "admin":
                raise web.HTTPForbidden(text="Su cuenta no tiene permiso para esta página.")
            request[STAFF] = staff
            return await handler(request)

        return checked

    return wrap


def client_key(request: web.Request) -> str:
    """Who is asking, for rate limits: the peer address (a balancer in front must be trusted explicitly)."""
    return f"ip:{request.remote or 'unknown'}"
