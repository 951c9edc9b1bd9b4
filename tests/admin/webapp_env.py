"""The real web app (veratur.webapp.build_app: signed sessions, staff login, CSRF) with the flow admin pages
mounted on a FlowService over a temp copy of the flow tree, and helpers to sign in as a given role."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from case_bridge.migrate import upgrade
from case_bridge.service import CaseService
from foundation.config import Settings
from testkit.db import REDIS_URL
from veratur.flows.service import FlowService
from veratur.flows.web import FlowsAdmin, WebappStaffAuth
from veratur.webapp import ROUTE_MODULES, build_app

PASSWORD = "contraseña-larga-1"


def case_service(tmp_path: Path) -> CaseService:
    url = f"sqlite:///{tmp_path / 'case_bridge.db'}"
    upgrade(url)
    return CaseService.from_url(url, redis_url=REDIS_URL, ratelimit_prefix=f"flows-{uuid.uuid4().hex}")


def admin_app(settings: Settings, cases: CaseService, flows: FlowService) -> web.Application:
    # every module of the real app but the flow pages, which are mounted on the temp tree instead of the checkout
    modules = tuple(m for m in ROUTE_MODULES if m != "veratur.flows.web")
    app = build_app(settings, cases, secret=uuid.uuid4().bytes * 2, route_modules=modules)
    FlowsAdmin(flows, WebappStaffAuth()).setup(app)     # as veratur.flows.web.setup does
    return app


async def sign_in(client: TestClient, cases: CaseService, role: str, name: str | None = None) -> str:  # type: ignore[type-arg]
    """Sign in a new staff user with `role`; returns the session's CSRF token."""
    name = name or f"{role}{uuid.uuid4().hex[:6]}"
    cases.create_staff(name, PASSWORD, role)
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token, page[:300]
    resp = await client.post("/staff/login", data={"_csrf": token.group(1), "usuario": name, "contrasena": PASSWORD},
                             allow_redirects=False)
    assert resp.status == 303, await resp.text()
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    return token.group(1)
