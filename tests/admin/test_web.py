"""The admin pages over HTTP (aiohttp test server, training seam): roles, CSRF, bad input, apply jobs,
conflicts between two administrators."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.admin.webauth import COOKIE, TestStaffAuth
from veratur.flows.service import FlowService
from veratur.flows.web import FlowsAdmin

USERS = {"ana": ("pw-ana", "admin"), "beto": ("pw-beto", "admin"), "clara": ("pw-clara", "clerk"),
         "diego": ("pw-diego", "agent")}


@pytest.fixture
async def web_env(service: FlowService):
    auth = TestStaffAuth(USERS)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    auth.setup(app)
    FlowsAdmin(service, auth).setup(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, auth, service
    await client.close()


def _as(auth: TestStaffAuth, user: str) -> tuple[dict[str, str], dict[str, str]]:
    sid = auth.login(user)
    return {COOKIE: sid}, {"X-CSRF-Token": auth.sessions[sid][1]}


async def _post(client: TestClient, auth: TestStaffAuth, user: str, path: str, body: Any,
                csrf: bool = True) -> tuple[int, Any]:
    cookies, headers = _as(auth, user)
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies(cookies)
    resp = await client.post("/admin/flows/api" + path, json=body, headers=headers if csrf else {})
    try:
        data = await resp.json()
    except Exception:
        data = await resp.text()
    return resp.status, data


async def _wait_job(client: TestClient, job: str) -> dict[str, Any]:
    for _ in range(200):
        resp = await client.get(f"/admin/flows/api/jobs/{job}")
        data = await resp.json()
        if data["state"] != "running":
            return data
        await asyncio.sleep(0.05)
    raise AssertionError("job did not finish")


async def test_only_admins_get_in(web_env) -> None:
    client, auth, _ = web_env
    resp = await client.get("/admin/flows", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login")
    for user in ("clara", "diego"):
        client.session.cookie_jar.update_cookies(_as(auth, user)[0])
        assert (await client.get("/admin/flows")).status == 403
        assert (await client.get("/admin/flows/api/file?path=dialogs/menu.yml")).status == 403
        status, _ = await _post(client, auth, user, "/validate", {"edits": [{"path": "dialogs/menu.yml", "text": ""}]})
        assert status == 403
    client.session.cookie_jar.update_cookies(_as(auth, "ana")[0])
    page = await client.get("/admin/flows")
    assert page.status == 200 and "dialogs/menu.yml" in await page.text()


async def test_posts_need_the_csrf_token(web_env) -> None:
    client, auth, _ = web_env
    status, _ = await _post(client, auth, "ana", "/validate", {"edits": [{"path": "dialogs/menu.yml", "text": ""}]},
                            csrf=False)
    assert status == 403


async def test_bad_input(web_env) -> None:
    client, auth, service = web_env
    text, sha = service.read("dialogs/menu.yml")
    status, data = await _post(client, auth, "ana", "/validate",
                               {"edits": [{"path": "dialogs/menu.yml", "text": "greeting: [sin cerrar\n", "base": sha}]})
    assert status == 200 and not data["ok"] and data["problems"][0]["line"] == 2
    status, data = await _post(client, auth, "ana", "/validate",
                               {"edits": [{"path": "dialogs/menu.yml", "text": text + "prompt_nuevo: hola\n"}]})
    assert not data["ok"] and data["problems"][0]["key"] == "prompt_nuevo"
    for path in ("../../etc/passwd", "/etc/passwd", "veratur/config.py", "dialogs/endpoints.yml"):
        status, data = await _post(client, auth, "ana", "/apply",
                                   {"edits": [{"path": path, "text": "a: 1\n"}], "message": "x"})
        assert status == 400, path
    status, _ = await _post(client, auth, "ana", "/apply", {"edits": [{"path": "nlu_data/train/nlu.yml",
                                                                      "text": "#" * (10 * 1024 * 1024)}], "message": "x"})
    assert status == 413
    status, _ = await _post(client, auth, "ana", "/apply", {"edits": "nope", "message": "x"})
    assert status == 400
    resp = await client.get("/admin/flows/edit?path=../config/veratur.yml")
    assert resp.status == 400


async def test_apply_job_and_conflict_between_two_admins(web_env) -> None:
    client, auth, service = web_env
    text, sha = service.read("dialogs/menu.yml")
    ana = text.replace("Bienvenido al portal ciudadano", "Bienvenida de Ana al portal ciudadano")
    beto = text.replace("Bienvenido al portal ciudadano", "Bienvenida de Beto al portal ciudadano")
    status, data = await _post(client, auth, "ana", "/apply",
                               {"edits": [{"path": "dialogs/menu.yml", "text": ana, "base": sha}], "message": "Ana"})
    assert status == 202
    job = await _wait_job(client, data["job"])
    assert job["state"] == "done" and job["result"]["revision"] == 2, job
    status, data = await _post(client, auth, "beto", "/apply",
                               {"edits": [{"path": "dialogs/menu.yml", "text": beto, "base": sha}], "message": "Beto"})
    assert status == 409 and data["by"] == "ana" and "cambió" in data["error"]
    assert "Bienvenida de Ana" in service.read("dialogs/menu.yml")[0]
    page = await (await client.get("/admin/flows/revisions/2")).text()
    assert "Bienvenida de Ana" in page


async def test_rejected_apply_reports_problems(web_env) -> None:
    client, auth, service = web_env
    text, sha = service.read("dialogs/data/rules.yml")
    bad = text.replace("- action: utter_greet", "- action: utter_inexistente", 1)
    status, data = await _post(client, auth, "ana", "/apply",
                               {"edits": [{"path": "dialogs/data/rules.yml", "text": bad, "base": sha}], "message": "m"})
    job = await _wait_job(client, data["job"])
    assert job["state"] == "rejected" and any("utter_inexistente" in p["message"] for p in job["problems"])
    assert service.read("dialogs/data/rules.yml")[1] == sha
