"""Hostile JSON bodies and response headers through the real web app (aiohttp test server, real case service):
nesting deep enough to make json.loads recurse out gave a 500 with a RecursionError to an anonymous POST; the
Server header named Python and aiohttp with their versions. Plus the parser itself (foundation.jsonbody)."""
from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.folio import is_valid as folio_ok
from case_bridge.service import CaseService
from foundation import jsonbody
from foundation.config import load_settings
from veratur.webapp import build_app

DEEP_ARRAY = "[" * 5000 + "]" * 5000                    # the body: RecursionError inside json.loads
DEEP_OBJECT = '{"a":' * 40 + "1" + "}" * 40             # parses, but deeper than any form we take


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


def test_parser_bounds_depth_without_recursing() -> None:
    assert jsonbody.depth({"a": [1, {"b": []}]}) == 4 and jsonbody.depth(5) == 0
    assert jsonbody.parse('{"a": [1, 2]}') == {"a": [1, 2]}
    for body in (DEEP_ARRAY, DEEP_OBJECT, "[" * 200000):
        with pytest.raises(jsonbody.BadJson, match="anidado|mal formado"):
            jsonbody.parse(body)
    with pytest.raises(jsonbody.BadJson, match="mal formado"):
        jsonbody.parse(b"\xff{")


async def test_open311_deep_json_is_a_clear_400(client: TestClient) -> None:  # type: ignore[type-arg]
    for body in (DEEP_ARRAY, DEEP_OBJECT):
        resp = await client.post("/open311/v2/requests.json", data=body,
                                 headers={"Content-Type": "application/json"})
        text = await resp.text()
        assert resp.status == 400, text[:300]
        assert "anidado" in text and "Traceback" not in text and "RecursionError" not in text


async def test_agent_api_deep_json_is_a_clear_400(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    name = f"agent{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, "contraseña-larga", "agent")
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/staff/login", data={"_csrf": token.group(1), "usuario": name,
                                                "contrasena": "contraseña-larga"}, allow_redirects=False)
    assert r.status == 303
    home = await (await client.get("/agente")).text()
    csrf = re.search(r'name="csrf-token" content="([^"]+)"|name="_csrf" value="([^"]+)"', home)
    headers = {"Content-Type": "application/json"}
    if csrf:
        headers["X-CSRF-Token"] = csrf.group(1) or csrf.group(2)
    resp = await client.post("/api/agente/llamadas/1/notas", data=DEEP_ARRAY, headers=headers)
    text = await resp.text()
    assert resp.status == 400, (resp.status, text[:300])
    assert "anidado" in text and "Traceback" not in text


async def test_server_header_names_the_product_only_on_every_kind_of_response(
        client: TestClient) -> None:  # type: ignore[type-arg]
    product = load_settings().sip.user_agent
    responses = [await client.get("/"), await client.get("/no-such-page"),
                 await client.get("/oficina", allow_redirects=False),
                 await client.post("/open311/v2/requests.json", data=DEEP_ARRAY,
                                   headers={"Content-Type": "application/json"})]
    for resp in responses:
        assert resp.headers.get("Server") == product, (resp.url, resp.status, resp.headers.get("Server"))
    assert {r.status for r in responses} >= {200, 404, 400}
    assert any(300 <= r.status < 400 for r in responses)


async def test_openapi_folio_pattern_and_the_check_digit_agree(client: TestClient) -> None:  # type: ignore[type-arg]
    """The path pattern cannot carry the Damm check: a folio the pattern accepts is never a 400 (wrong check digit:
    404 like an unknown folio, as the description says); outside the pattern it is a 400."""
    spec = await (await client.get("/open311/v2/openapi.json")).json()
    param = next(p for p in spec["paths"]["/open311/v2/requests/{folio}.json"]["get"]["parameters"]
                 if p["name"] == "folio")
    pattern = re.compile(param["schema"]["pattern"])
    assert "Damm" in param["description"] and "404" in param["description"]
    wrong_check = "12345678" if not folio_ok("12345678") else "12345679"
    assert pattern.fullmatch(wrong_check) and not folio_ok(wrong_check)
    resp = await client.get(f"/open311/v2/requests/{wrong_check}.json", headers={"X-Veratur-PIN": "1234"})
    assert resp.status == 404, await resp.text()
    resp = await client.get("/open311/v2/requests/1234567.json", headers={"X-Veratur-PIN": "1234"})
    assert resp.status == 400 and not pattern.fullmatch("1234567")
