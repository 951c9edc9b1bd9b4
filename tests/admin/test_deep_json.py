"""The admin flows API against a body nested deep enough to make json.loads recurse out (it answered 500 with a
RecursionError): a clear 400 from the real web app, signed-in admin, valid CSRF token."""
from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from foundation.config import Settings
from tests.admin.webapp_env import admin_app, case_service, sign_in
from veratur.flows.service import FlowService
from veratur.flows.web import API


async def test_validate_with_deeply_nested_json_is_a_clear_400(settings: Settings, service: FlowService,
                                                               tmp_path: Path) -> None:
    cases = case_service(tmp_path)
    client = TestClient(TestServer(admin_app(settings, cases, service)))
    await client.start_server()
    try:
        token = await sign_in(client, cases, "admin")
        for body in ("[" * 5000 + "]" * 5000, '{"edits": ' + "[" * 40 + "]" * 40 + "}"):
            resp = await client.post(API + "/validate", data=body,
                                     headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
            text = await resp.text()
            assert resp.status == 400, (resp.status, text[:300])
            assert "anidado" in text and "Traceback" not in text and "RecursionError" not in text
    finally:
        await client.close()
        cases.close()
