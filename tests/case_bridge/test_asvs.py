"""OWASP ASVS 4.0.3 level 1, the items that apply to the web app, each asserted against the real app (aiohttp test
server, real case service on SQLite and PostgreSQL, Redis). Item numbers in the test names' docstrings.

Covered elsewhere and not repeated here: V2.2.1 anti-automation (test_staff_throttle, test_verification_throttle,
test_pin_guessing), V2.1.x/V3.3.1/V3.3.2/V3.3.3 session end at logout, idle, password change and 8 h
(test_session_revocation), V4.2.2 CSRF (test_web), V5.1/V5.3 input handling and output encoding (test_web's XSS
cases, test_http_properties' walk, test_json_bodies), V3.2.x timing of logins (test_login_timing)."""
from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.models import ROLES
from case_bridge.service import CaseService
from case_bridge.web.security import COOKIE
from foundation.config import load_settings
from veratur.webapp import build_app

PASSWORD = "contraseña-muy-larga-1"
SECURITY_HEADERS = {
    "Content-Security-Policy": re.compile(r"default-src 'self'.*frame-ancestors 'none'"),
    "X-Content-Type-Options": re.compile(r"^nosniff$"),
    "X-Frame-Options": re.compile(r"^DENY$"),
    "Referrer-Policy": re.compile(r"^no-referrer$"),
}
# each role's own area: every other role is kept out of it (V4.1.1, V4.1.3)
AREAS = {"clerk": "/oficina", "agent": "/agente", "supervisor": "/supervision", "admin": "/admin/flows"}


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


def plain_get_routes(client: TestClient) -> list[str]:  # type: ignore[type-arg]
    paths = set()
    for route in client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path")
        if route.method == "GET" and path and not path.endswith("/ws"):
            paths.add(path)
    return sorted(paths)


async def sign_in(client: TestClient, svc: CaseService, role: str) -> None:  # type: ignore[type-arg]
    name = f"{role}{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, PASSWORD, role)
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    resp = await client.post("/staff/login", allow_redirects=False,
                             data={"_csrf": token.group(1), "usuario": name, "contrasena": PASSWORD})
    assert resp.status == 303, await resp.text()


def session_cookie(client: TestClient) -> str:  # type: ignore[type-arg]
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value


async def test_every_response_carries_the_security_headers_redirects_and_errors_too(
        client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    """V14.4.3 (CSP), V14.4.4 (nosniff), V14.4.5/V14.4.7 (framing), V14.4.6 (Referrer-Policy), V14.3.3 (no
    version in Server), V8.1.1 (no-store on staff and case pages); anonymous and signed in, 2xx, 3xx, 4xx."""
    statuses: set[int] = set()
    for signed_in in (False, True):
        if signed_in:
            await sign_in(client, svc, "admin")
        for path in plain_get_routes(client) + ["/no-existe", "/static/no-existe.css"]:
            resp = await client.get(path, allow_redirects=False)
            statuses.add(resp.status // 100)
            for name, shape in SECURITY_HEADERS.items():
                assert shape.search(resp.headers.get(name, "")), f"{path} ({resp.status}) {name}: {resp.headers}"
            server = resp.headers.get("Server", "")
            assert not re.search(r"\d|python|aiohttp", server, re.I), f"{path}: Server {server!r}"
            if path.startswith(("/oficina", "/agente", "/admin", "/caso", "/staff")):
                assert "no-store" in resp.headers.get("Cache-Control", ""), f"{path} ({resp.status}) is cacheable"
    assert {2, 3, 4} <= statuses                       # the walk did meet pages, redirects and errors


async def test_the_session_cookie_is_httponly_samesite_and_secure_off_loopback(
        client: TestClient) -> None:  # type: ignore[type-arg]
    """V3.4.1 (Secure), V3.4.2 (HttpOnly), V3.4.3 (SameSite), V3.4.5 (Path)."""
    local = await client.get("/staff/login")
    cookie = local.headers.get("Set-Cookie", "")
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and re.search(r"SameSite=(Lax|Strict)", cookie)
    assert "Path=/" in cookie
    for headers in ({"Host": "portal.veracruz.gob.mx"}, {"X-Forwarded-Proto": "https"}):
        client.session.cookie_jar.clear()              # a new browser: the session cookie is set again
        resp = await client.get("/staff/login", headers=headers)
        assert "Secure" in resp.headers.get("Set-Cookie", ""), headers


async def test_signing_in_gives_a_new_session_and_csrf_token(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    """V3.2.1: a new session token at authentication (no fixation); the token seen before sign-in is worthless."""
    page = await (await client.get("/staff/login")).text()
    before_token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert before_token
    before = session_cookie(client)
    await sign_in(client, svc, "clerk")
    assert session_cookie(client) != before
    resp = await client.post("/staff/logout", data={"_csrf": before_token.group(1)}, allow_redirects=False)
    assert resp.status == 403                          # the pre-login CSRF token no longer works
    assert (await client.get("/oficina", allow_redirects=False)).status == 200   # still signed in


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_reaches_only_its_own_area(client: TestClient, svc: CaseService, role: str) -> None:  # type: ignore[type-arg]
    """V4.1.1/V4.1.3/V4.1.5: access control on the server, least privilege, failing closed. The administrator is
    the one role that may open every area (`require_role`: it runs the node and enrols the staff)."""
    for area in AREAS.values():                        # anonymous: sent to the login, never the page
        resp = await client.get(area, allow_redirects=False)
        assert resp.status in (302, 303, 401) and "/staff/login" in resp.headers.get("Location", "/staff/login")
    await sign_in(client, svc, role)
    for owner, area in AREAS.items():
        resp = await client.get(area, allow_redirects=False)
        if owner == role or role == "admin":
            assert resp.status == 200, f"{role} kept out of {area}"
        else:
            assert resp.status in (302, 303, 403), f"{role} reached {area} ({resp.status})"
            assert resp.status != 200


async def test_no_cross_origin_access_and_no_unexpected_methods(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    """V14.5.3 (CORS: no other origin may read answers, least of all a signed-in one), V13.1 / V14.5.1 (only the
    methods a route serves: TRACE and friends are refused, by the CSRF check (403) before routing (405))."""
    await sign_in(client, svc, "supervisor")
    for path in ("/api/ops/calls", "/api/ops/live", "/open311/v2/services.json"):
        resp = await client.get(path, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in resp.headers, path
        preflight = await client.options(path, headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "GET"})
        assert "Access-Control-Allow-Origin" not in preflight.headers, path
    for method in ("TRACE", "PUT", "DELETE", "PATCH"):
        resp = await client.request(method, "/oficina", allow_redirects=False)
        assert resp.status in (403, 405), (method, resp.status)
