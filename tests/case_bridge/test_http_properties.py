"""Property test of the web app's HTTP API (issue 13, item 3): whatever a client sends, the answer is never a 5xx
and never shows a traceback. Seeded and bounded (reproducible; SEED in the failure message). Three walks through the
real app (aiohttp test server, real case service on SQLite and PostgreSQL):
- the Open311 API from its own OpenAPI document: every operation, with parameters and bodies built from the schema
  (valid shapes, boundary values, wrong types, hostile strings, missing and extra fields, both content types);
- every route of the app without a session (path segments, query strings and form/JSON bodies of junk);
- every route again with an administrator's session and CSRF token, except those that start Rasa work
  (flows apply/rollback/try/chat) or end the session (logout).
A hand-rolled generator instead of schemathesis: it adds no dependency to the shared venv and reaches the
non-OpenAPI routes too."""
from __future__ import annotations

import json
import random
import re
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.service import CaseService
from foundation.config import load_settings
from veratur.webapp import build_app

SEED = 1313
CASES_PER_OPERATION = 60
CASES_PER_ROUTE = 6
# Routes a fuzzer must not drive: Rasa training/talking (minutes of CPU on a shared box), the websocket, logout.
NOT_FUZZED = re.compile(r"^/api/admin/flows/(apply|rollback|try|chat)$|/ws$|^/staff/logout$|^/static|^/admin/flows/static")

HOSTILE = ["", " ", "0", "-1", "99999999999999999999", "1e309", "NaN", "null", "true", "[]", "{}", "%00", "\x00",
           "../../etc/passwd", "..%2f..%2f", "' OR '1'='1", "\"; DROP TABLE cases; --", "<script>x</script>",
           "ñandú", "🙂" * 50, "\u202e\u0000\ufeff", "a" * 5000, "\ud800".encode("utf-8", "surrogatepass").decode(
               "utf-8", "replace"), "%", "%%", "%zz", "\r\nX-Injected: 1", "12345678", "12345670", "00000000",
           "GOMC800101HVZRRR09", "2281234567"]


def junk(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(HOSTILE)
    if kind == 1:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(40)))
    if kind == 2:
        return rng.choice([0, -1, 2**63, 3.5, True, None])
    if kind == 3:
        return [rng.choice(HOSTILE) for _ in range(rng.randrange(3))]
    if kind == 4:
        return {rng.choice(HOSTILE)[:20]: rng.choice(HOSTILE)}
    return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(30)))


def from_schema(schema: dict[str, Any], spec: dict[str, Any], rng: random.Random) -> Any:
    """A value shaped by `schema` most of the time, junk the rest."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if rng.random() < 0.3:
        return junk(rng)
    kind = schema.get("type")
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if kind == "string":
        if "pattern" in schema and rng.random() < 0.5:
            return "".join(rng.choice(string.digits) for _ in range(8))
        low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
        size = rng.choice([low, high, max(low - 1, 0), high + 1, rng.randint(low, max(low, min(high, 60)))])
        return "".join(rng.choice(string.ascii_letters + string.digits + "ñÁ -") for _ in range(size))
    if kind == "integer":
        return rng.choice([0, 1, -1, 2**31, rng.randrange(1000)])
    if kind == "array":
        return [from_schema(schema.get("items", {}), spec, rng) for _ in range(rng.randrange(3))]
    if kind == "object":
        props = schema.get("properties", {})
        body = {name: from_schema(sub, spec, rng) for name, sub in props.items()
                if name in schema.get("required", []) or rng.random() < 0.6}
        if rng.random() < 0.2:
            body[rng.choice(HOSTILE)[:30]] = junk(rng)
        return body
    return junk(rng)


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def as_form(body: Any) -> str:
    """A urlencoded body encoded here (aiohttp's FormData refuses field names with control characters)."""
    if not isinstance(body, dict):
        body = {"x": body}
    return urlencode([(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in body.items()])


def header_safe(value: Any) -> str:
    """Header values cannot carry CR, LF or NUL (the client refuses to send them at all)."""
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "", str(value))[:2000]


def fill_path(path: str, rng: random.Random) -> str:
    def segment(_: re.Match[str]) -> str:
        value = str(rng.choice([junk(rng), "12345670", "1", str(uuid.uuid4())]))
        return re.sub(r"[^A-Za-z0-9._~-]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)[:300] \
            or "x"
    return re.sub(r"\{[^}]+\}", segment, path)


def query(rng: random.Random) -> str:
    pairs = [(str(junk(rng))[:30], str(junk(rng))[:200]) for _ in range(rng.randrange(3))]
    return urlencode(pairs) if pairs else ""


def assert_no_crash(status: int, text: str, what: str) -> None:
    assert status < 500, f"{what} -> {status} (seed {SEED}): {text[:400]}"
    assert "Traceback" not in text, f"{what} -> traceback (seed {SEED}): {text[:400]}"


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app), timeout=ClientTimeout(total=20)) as c:
        yield c


ENDS_SESSION = re.compile(r"/(salir|terminar)$|^/staff/login$")   # sign-outs and a new login replace the session


def app_routes(client: TestClient, skip: re.Pattern[str] | None = None) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    found = []
    for route in client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method in ("GET", "POST") and path and not NOT_FUZZED.search(path) \
                and not (skip and skip.search(path)):
            found.append((route.method, path))
    return sorted(set(found))


async def fuzz_routes(client: TestClient, rng: random.Random, tag: str, csrf: str | None = None) -> int:  # type: ignore[type-arg]
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    sent = 0
    for method, path in app_routes(client, ENDS_SESSION if csrf else None):
        for _ in range(CASES_PER_ROUTE):
            url = fill_path(path, rng)
            q = query(rng)
            url = f"{url}?{q}" if q else url
            if method == "GET":
                resp = await client.get(url, headers=headers, allow_redirects=False)
            elif rng.random() < 0.5:
                body = {str(junk(rng))[:20]: junk(rng) for _ in range(rng.randrange(4))}
                if csrf:
                    body["_csrf"] = csrf
                resp = await client.post(url, data=as_form(body), headers={**headers, **FORM},
                                         allow_redirects=False)
            else:
                raw = rng.choice([json.dumps(junk(rng)), "{", "[" * 300, '{"a": ' * 10, "\xff\xfe", ""])
                resp = await client.post(url, data=raw.encode("utf-8", "replace"), allow_redirects=False,
                                         headers={**headers, "Content-Type": "application/json"})
            assert_no_crash(resp.status, await resp.text(errors="replace"), f"{tag} {method} {url[:200]}")
            sent += 1
    return sent


async def test_open311_operations_from_the_openapi_document_never_give_a_5xx(client: TestClient) -> None:  # type: ignore[type-arg]
    rng = random.Random(SEED)
    spec = await (await client.get("/open311/v2/openapi.json")).json()
    # real service codes most of the time, so cases get opened too (the spec leaves it a free string)
    services = await (await client.get("/open311/v2/services.json")).json()
    spec["components"]["schemas"]["NewRequest"]["properties"]["service_code"]["enum"] = [
        s["service_code"] for s in services]
    codes: dict[int, int] = {}
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for _ in range(CASES_PER_OPERATION):
                url, headers = path, {}
                for param in op.get("parameters", []):
                    value = from_schema(param.get("schema", {}), spec, rng)
                    if param["in"] == "path":
                        url = url.replace("{" + param["name"] + "}", fill_path("{x}", rng) if rng.random() < 0.3
                                          else re.sub(r"[^0-9A-Za-z]", "", str(value)) or "0")
                    elif param["in"] == "header" and rng.random() < 0.8:
                        headers[param["name"]] = header_safe(value)
                kwargs: dict[str, Any] = {}
                if "requestBody" in op:
                    content = rng.choice(list(op["requestBody"]["content"]))
                    body = from_schema(op["requestBody"]["content"][content]["schema"], spec, rng)
                    if content == "application/json":
                        kwargs["data"] = json.dumps(body)
                        headers["Content-Type"] = content
                    else:
                        kwargs["data"] = as_form(body)
                        headers.update(FORM)
                resp = await client.request(method.upper(), url, headers=headers, allow_redirects=False, **kwargs)
                text = await resp.text(errors="replace")
                assert_no_crash(resp.status, text, f"{method.upper()} {url[:120]} {str(kwargs)[:200]}")
                documented = set(op["responses"]) | {"413", "415", "429", "405"}
                assert str(resp.status) in documented, f"{method.upper()} {url} -> undocumented {resp.status}: " \
                                                       f"{text[:300]}"
                codes[resp.status] = codes.get(resp.status, 0) + 1
    print(f"\nOpen311 from its OpenAPI: {sum(codes.values())} requests, statuses {dict(sorted(codes.items()))}")
    assert len(codes) >= 3            # the walk reached more than one outcome (not all refused the same way)


async def test_every_route_without_a_session_never_gives_a_5xx(client: TestClient) -> None:  # type: ignore[type-arg]
    sent = await fuzz_routes(client, random.Random(SEED + 1), "anonymous")
    print(f"\nanonymous: {sent} requests over {len(app_routes(client))} routes, no 5xx")
    assert sent >= 50 * CASES_PER_ROUTE


async def test_every_route_with_an_admin_session_never_gives_a_5xx(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    name = f"admin{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, "contraseña-larga-1", "admin")
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/staff/login", data={"_csrf": token.group(1), "usuario": name,
                                                "contrasena": "contraseña-larga-1"}, allow_redirects=False)
    assert r.status == 303
    first = await client.get("/admin/flows", allow_redirects=False)
    assert first.status == 200, (first.status, first.headers.get("Location"))
    home = await first.text()
    csrf = re.search(r'name="csrf-token" content="([^"]+)"|name="_csrf" value="([^"]+)"', home)
    assert csrf, home[:300]
    csrf_value = csrf.group(1) or csrf.group(2)
    sent = await fuzz_routes(client, random.Random(SEED + 2), "admin", csrf_value)
    assert (await client.get("/admin/flows", allow_redirects=False)).status == 200     # the session lasted the walk
    print(f"\nadmin session: {sent} requests over {len(app_routes(client))} routes, no 5xx")


async def test_control_characters_in_an_open311_body_are_a_clear_400(client: TestClient) -> None:  # type: ignore[type-arg]
    """The property walk's finding: a NUL in service_code gave a 500 on PostgreSQL (text cannot hold NUL)."""
    services = await (await client.get("/open311/v2/services.json")).json()
    code = services[0]["service_code"]
    for body in ({"service_code": "\u0000"}, {"service_code": code, "first_name": "Ana\u0000"},
                 {"service_code": code, "description": "x\u0007"}):
        resp = await client.post("/open311/v2/requests.json", data=json.dumps(body),
                                 headers={"Content-Type": "application/json"})
        text = await resp.text()
        assert resp.status == 400 and "caracteres de control" in text, (body, resp.status, text[:200])
    ok = await client.post("/open311/v2/requests.json", headers={"Content-Type": "application/json"},
                           data=json.dumps({"service_code": code, "description": "línea 1\nlínea 2\ttab"}))
    assert ok.status == 201, await ok.text()
