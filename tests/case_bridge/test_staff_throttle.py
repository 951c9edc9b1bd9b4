"""Staff sign-in throttling through the real web server (aiohttp on 127.0.0.1, clients bound to other loopback
addresses so the server sees distinct peers; real case service and Redis/database counters): wrong passwords from
one address lock only that account at that address, never the colleague signing in elsewhere (issue 13: 10 wrong
passwords from anyone locked the account for 15 minutes); spraying many usernames from one address stops that
address."""
from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from case_bridge.ratelimit import CLIENT_MAX_FAILURES, LOGIN_ADDRESS_MAX_FAILURES
from case_bridge.service import CaseService
from foundation.config import load_settings
from veratur.webapp import build_app

PASSWORD = "contraseña-larga"


@pytest.fixture
async def server(svc: CaseService) -> AsyncIterator[TestServer]:
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


async def _login(server: TestServer, address: str, username: str, password: str) -> int:
    """One sign-in from `address` in a fresh browser session; the HTTP status (303 signed in, 401 refused)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        page = await (await http.get(server.make_url("/staff/login"))).text()
        token = re.search(r'name="_csrf" value="([^"]+)"', page)
        assert token, page[:300]
        resp = await http.post(server.make_url("/staff/login"), allow_redirects=False,
                               data={"_csrf": token.group(1), "usuario": username, "contrasena": password})
        return resp.status


async def test_an_outsider_cannot_lock_a_colleague_out(server: TestServer, svc: CaseService,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    user = f"clerk{uuid.uuid4().hex[:8]}"
    svc.create_staff(user, PASSWORD, "clerk")
    caplog.set_level(logging.INFO, logger="case_bridge.web.staff")
    for _ in range(CLIENT_MAX_FAILURES + 2):
        assert await _login(server, "127.0.0.3", user, "mal") == 401
    # the outsider's own pair is locked: even the right password from there is refused without being checked
    assert await _login(server, "127.0.0.3", user, PASSWORD) == 401
    assert "event=staff_login_lock_set" in caplog.text and "event=staff_login_throttled" in caplog.text
    # the colleague at her own desk signs in
    assert await _login(server, "127.0.0.4", user, PASSWORD) == 303


async def test_password_spraying_from_one_address_is_stopped_there_only(server: TestServer,
                                                                      svc: CaseService) -> None:
    user = f"agent{uuid.uuid4().hex[:8]}"
    svc.create_staff(user, PASSWORD, "agent")
    for index in range(LOGIN_ADDRESS_MAX_FAILURES):
        assert await _login(server, "127.0.0.5", f"nadie{index}", "Verano2026!") == 401
    assert await _login(server, "127.0.0.5", user, PASSWORD) == 401       # that address is throttled
    assert await _login(server, "127.0.0.6", user, PASSWORD) == 303       # nobody else is
