"""Staff sessions end on the server (issue 13: after logout the old cookie still opened /oficina for up to 8 h):
a copied cookie is refused after logout, also by another web process (two app instances sharing Redis, as
web.processes run), after an administrator ends the user's sessions, after 30 idle minutes and 8 h after sign-in.
Real web app on aiohttp test servers, real case service (SQLite and PostgreSQL) and Redis."""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.service import CaseService
from case_bridge.web.security import COOKIE, REVOCATIONS, SESSION_TTL_S, SIGNER, STAFF_IDLE_S
from foundation.config import load_settings
from veratur.webapp import build_app

PASSWORD = "contraseña-larga"


@pytest.fixture
async def two_processes(svc: CaseService) -> AsyncIterator[tuple[TestClient, TestClient]]:  # type: ignore[type-arg]
    secret = uuid.uuid4().bytes * 2                 # one key file shared by the node's web processes
    async with TestClient(TestServer(build_app(load_settings(), svc, secret=secret))) as one, \
            TestClient(TestServer(build_app(load_settings(), svc, secret=secret))) as two:
        yield one, two


async def _sign_in(client: TestClient, svc: CaseService) -> tuple[str, int]:  # type: ignore[type-arg]
    name = f"clerk{uuid.uuid4().hex[:8]}"
    staff = svc.create_staff(name, PASSWORD, "clerk")
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/staff/login", allow_redirects=False,
                          data={"_csrf": token.group(1), "usuario": name, "contrasena": PASSWORD})
    assert r.status == 303
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    return cookie, staff.id


async def _open_with(client: TestClient, cookie: str) -> int:  # type: ignore[type-arg]
    """GET /oficina from another browser holding a copy of `cookie`: 200, or 302 to the login page."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other:
        resp = await other.get(client.make_url("/oficina"), headers={"Cookie": f"{COOKIE}={cookie}"},
                               allow_redirects=False)
        return resp.status


async def test_logout_ends_every_copy_of_the_session_in_every_process(
        two_processes: tuple[TestClient, TestClient], svc: CaseService) -> None:  # type: ignore[type-arg]
    one, two = two_processes
    cookie, _ = await _sign_in(one, svc)
    assert await _open_with(one, cookie) == 200 and await _open_with(two, cookie) == 200
    page = await (await one.get("/oficina")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await one.post("/staff/logout", data={"_csrf": token.group(1)}, allow_redirects=False)
    assert r.status == 303
    assert await _open_with(one, cookie) == 302          # before: 200 until the cookie's 8 h ran out
    assert await _open_with(two, cookie) == 302          # the other web process knows too (Redis)
    cookie_again, _ = await _sign_in(one, svc)           # a new sign-in works as before
    assert await _open_with(two, cookie_again) == 200


async def test_an_administrator_can_end_a_users_sessions(
        two_processes: tuple[TestClient, TestClient], svc: CaseService) -> None:  # type: ignore[type-arg]
    one, two = two_processes
    cookie, staff_id = await _sign_in(one, svc)
    assert await _open_with(two, cookie) == 200
    one.app[REVOCATIONS].end_all(staff_id)
    assert await _open_with(two, cookie) == 302


async def test_idle_and_old_sessions_end(two_processes: tuple[TestClient, TestClient],
                                         svc: CaseService) -> None:  # type: ignore[type-arg]
    one, _ = two_processes
    cookie, _ = await _sign_in(one, svc)
    signer = one.app[SIGNER]
    data = signer.loads(cookie)
    assert data is not None
    now = time.time()

    def forged(**times: float) -> str:
        return signer.dumps({**data, "staff": {**data["staff"], **times}})

    assert await _open_with(one, forged(seen=now - 60)) == 200
    assert await _open_with(one, forged(seen=now - STAFF_IDLE_S - 5)) == 302
    assert await _open_with(one, forged(iat=now - SESSION_TTL_S - 5, seen=now)) == 302
    legacy = {**data, "staff": {k: v for k, v in data["staff"].items() if k not in ("iat", "seen")}}
    assert await _open_with(one, signer.dumps(legacy)) == 302        # a cookie from before this change


async def test_a_password_change_ends_the_earlier_sessions_in_every_process(
        two_processes: tuple[TestClient, TestClient], svc: CaseService) -> None:  # type: ignore[type-arg]
    """The password hash is salted, so its stamp in the session changes with every change: no Redis involved (a
    lost Redis write cannot keep a stolen session alive past the password change)."""
    one, two = two_processes
    cookie, staff_id = await _sign_in(one, svc)
    staff = svc.get_staff(staff_id)
    assert staff is not None
    assert await _open_with(one, cookie) == 200 and await _open_with(two, cookie) == 200
    svc.set_password(staff.username, "otra-contraseña-larga")      # e.g. `veratur db set-password`
    assert await _open_with(one, cookie) == 302 and await _open_with(two, cookie) == 302
    page = await (await two.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await two.post("/staff/login", allow_redirects=False, data={
        "_csrf": token.group(1), "usuario": staff.username, "contrasena": "otra-contraseña-larga"})
    assert r.status == 303
    fresh = two.session.cookie_jar.filter_cookies(two.make_url("/"))[COOKIE].value
    assert await _open_with(one, fresh) == 200                      # signed in after the change: fine


async def test_deactivating_a_user_ends_their_sessions_in_every_process(
        two_processes: tuple[TestClient, TestClient], svc: CaseService) -> None:  # type: ignore[type-arg]
    one, two = two_processes
    cookie, staff_id = await _sign_in(one, svc)
    staff = svc.get_staff(staff_id)
    assert staff is not None and await _open_with(two, cookie) == 200
    svc.set_active(staff.username, False)                          # e.g. `veratur db deactivate-user`
    assert await _open_with(one, cookie) == 302 and await _open_with(two, cookie) == 302
    assert svc.authenticate(staff.username, PASSWORD) is None
