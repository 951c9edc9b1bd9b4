"""A stand-in for the web app's staff login, for these tests only (the case-bridge engineer's veratur/webapp.py
is not in the tree yet): a login form, a random session cookie, a per-session CSRF token. It implements
`veratur.flows.web.StaffAuth`, the seam the real login plugs into."""
from __future__ import annotations

import secrets

from aiohttp import web

from veratur.flows.web import Staff

COOKIE = "test_session"


class TestStaffAuth:
    """Users: name -> (password, role)."""

    __test__ = False

    def __init__(self, users: dict[str, tuple[str, str]]) -> None:
        self.users = users
        self.sessions: dict[str, tuple[Staff, str]] = {}

    async def staff(self, request: web.Request) -> Staff | None:
        found = self.sessions.get(request.cookies.get(COOKIE, ""))
        return found[0] if found else None

    def csrf_token(self, request: web.Request) -> str:
        found = self.sessions.get(request.cookies.get(COOKIE, ""))
        return found[1] if found else ""

    def login_url(self, request: web.Request) -> str:
        return "/login?next=" + request.path

    def login(self, username: str) -> str:
        sid = secrets.token_urlsafe(16)
        self.sessions[sid] = (Staff(username, self.users[username][1]), secrets.token_urlsafe(16))
        return sid

    def setup(self, app: web.Application) -> None:
        async def form(request: web.Request) -> web.Response:
            return web.Response(content_type="text/html", text=(
                '<form method="post" action="/login"><input name="username" id="username">'
                '<input name="password" id="password" type="password"><button id="login">Entrar</button></form>'))

        async def submit(request: web.Request) -> web.Response:
            data = await request.post()
            user = str(data.get("username", ""))
            if user not in self.users or self.users[user][0] != data.get("password"):
                raise web.HTTPUnauthorized(text="usuario o contraseña incorrectos")
            resp = web.HTTPFound("/admin/flows")
            resp.set_cookie(COOKIE, self.login(user), httponly=True, samesite="Strict")
            raise resp

        app.router.add_get("/login", form)
        app.router.add_post("/login", submit)
