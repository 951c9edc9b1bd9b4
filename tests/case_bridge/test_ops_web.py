"""Operations pages over HTTP: role checks, dashboard, call search and detail, CSV export (formula cells
neutralized, callers masked) and the JSON API's paging and date filters."""
from __future__ import annotations

import csv
import io
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.service import CaseService
from foundation.config import load_settings
from testkit.call_records import FORMULA_TEXT, KnownCalls, seed_known_calls
from veratur.webapp import build_app

_DAYS = itertools.count()


@pytest.fixture
def db_url(sqlite_database: str) -> str:
    # pages over SQLite only: the aggregates behind them run on both backends in test_analytics
    return sqlite_database


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
def known(svc: CaseService) -> KnownCalls:
    return seed_known_calls(svc, date(2023, 1, 2) + timedelta(days=14 * next(_DAYS)))


def _day(known: KnownCalls) -> str:
    from case_bridge.views import LOCAL_TZ
    return known.since.astimezone(LOCAL_TZ).date().isoformat()


async def _login(client: TestClient, svc: CaseService, role: str) -> None:  # type: ignore[type-arg]
    name = f"{role}{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, "contraseña-larga", role)
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/staff/login", data={"_csrf": token.group(1), "usuario": name,
                                                 "contrasena": "contraseña-larga"}, allow_redirects=False)
    assert r.status == 303
    if role == "supervisor":
        assert r.headers["Location"] == "/supervision"


@pytest.mark.parametrize("role", ["clerk", "agent"])
async def test_other_roles_cannot_read_operations(client: TestClient, svc: CaseService, role: str,  # type: ignore[type-arg]
                                                  known: KnownCalls) -> None:
    for path in ("/supervision", "/supervision/llamadas", "/supervision/llamadas.csv", "/api/ops/calls",
                 "/api/ops/live", f"/supervision/llamadas/{known.ids['A']}"):
        anon = await client.get(path, allow_redirects=False)
        assert anon.status in (302, 303, 401, 403), path
    await _login(client, svc, role)
    for path in ("/supervision", "/supervision/llamadas.csv", "/api/ops/calls", "/api/ops/live",
                 f"/supervision/llamadas/{known.ids['A']}"):
        r = await client.get(path, allow_redirects=False)
        assert r.status == 403, path
        assert "0101" not in await r.text()


async def test_supervisor_dashboard_and_search(client: TestClient, svc: CaseService, known: KnownCalls) -> None:  # type: ignore[type-arg]
    await _login(client, svc, "supervisor")
    day = _day(known)
    r = await client.get(f"/supervision?desde={day}&hasta={day}")
    page = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert 'id="kpi-calls">4<' in page and "50.0 %" in page and 'id="kpi-peak">3<' in page
    assert 'id="kpi-cross">1 de 1<' in page
    assert "2281234567" not in page and "******4567" in page          # the un-understood phrase, masked
    assert page.count('class="bar point"') >= 10
    r = await client.get(f"/supervision/llamadas?desde={day}&hasta={day}&disposicion=transferred")
    page = await r.text()
    assert r.status == 200 and "1 llamadas" in page and "******0101" in page and "2285550101" not in page
    detail = await client.get(f"/supervision/llamadas/{known.ids['B']}")
    text = await detail.text()
    assert detail.status == 200 and "no_match" in text and "******4567" in text and "2281234567" not in text
    assert (await client.get(f"/supervision?desde={day}&hasta=mañana")).status == 400
    assert (await client.get("/supervision/llamadas?disposicion=nada")).status == 400
    month = await client.get(f"/supervision/mes?mes={day[:7]}", allow_redirects=False)
    assert month.status == 303 and "imprimir=1" in month.headers["Location"]


async def test_csv_export_neutralizes_formulas_and_masks(client: TestClient, svc: CaseService,  # type: ignore[type-arg]
                                                         known: KnownCalls) -> None:
    await _login(client, svc, "supervisor")
    day = _day(known)
    r = await client.get(f"/supervision/llamadas.csv?desde={day}&hasta={day}")
    assert r.status == 200 and r.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO((await r.text()).lstrip("\ufeff"))))
    assert sorted(row["call_id"] for row in rows) == sorted(known.ids[k] for k in "ABCD")
    assert {row["caller"] for row in rows} == {"******0101"}
    transcript = await client.get(f"/supervision/llamadas/{known.ids['B']}?formato=csv")
    cells = [row["text"] for row in csv.DictReader(io.StringIO((await transcript.text()).lstrip("\ufeff")))]
    assert "'" + FORMULA_TEXT in cells and FORMULA_TEXT not in cells
    assert all(not c.startswith(("=", "+", "-", "@")) for c in cells)
    assert not any("2281234567" in c for c in cells)


async def test_json_api_paging_and_dates(client: TestClient, svc: CaseService, known: KnownCalls) -> None:  # type: ignore[type-arg]
    await _login(client, svc, "supervisor")
    since, until = known.since.isoformat(), known.until.isoformat()
    first = await (await client.get("/api/ops/calls", params={"since": since, "until": until, "per_page": "3"})).json()
    assert first["total"] == 4 and len(first["calls"]) == 3
    second = await (await client.get("/api/ops/calls", params={"since": since, "until": until, "per_page": "3",
                                                                "page": "2"})).json()
    assert [c["call_id"] for c in second["calls"]] == [known.ids["A"]]
    b = next(c for c in first["calls"] if c["call_id"] == known.ids["B"])
    assert (b["disposition"], b["transfer_reason"], b["caller"]) == ("transferred", "no_match", "******0101")
    bad = await client.get("/api/ops/calls", params={"since": "ayer"})
    assert bad.status == 400 and (await bad.json())[0]["code"] == 400
    live = await (await client.get("/api/ops/live")).json()
    assert set(live) == {"calls", "per_worker", "queue_waiting", "longest_wait_s", "node"}   # node: test_ops_live


async def test_callbacks_in_the_api_csv_and_dashboard(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    known = seed_known_calls(svc, date(2023, 1, 2) + timedelta(days=14 * next(_DAYS)), callbacks=True)
    await _login(client, svc, "supervisor")
    since, until, day = known.since.isoformat(), known.until.isoformat(), _day(known)
    out = await (await client.get("/api/ops/calls", params={"since": since, "until": until,
                                                             "direction": "outbound"})).json()
    assert out["total"] == 3 and {c["direction"] for c in out["calls"]} == {"outbound"}
    assert {c["call_id"] for c in out["calls"]} == {known.ids[k] for k in "EFG"}
    inbound = await (await client.get("/api/ops/calls", params={"since": since, "until": until,
                                                                 "direction": "inbound"})).json()
    assert inbound["total"] == 4 and {c["direction"] for c in inbound["calls"]} == {"inbound"}
    assert (await client.get("/api/ops/calls", params={"direction": "both"})).status == 400
    r = await client.get(f"/supervision/llamadas.csv?desde={day}&hasta={day}&direccion=saliente")
    rows = list(csv.DictReader(io.StringIO((await r.text()).lstrip("\ufeff"))))
    assert len(rows) == 3 and {row["direction"] for row in rows} == {"outbound"}
    page = await (await client.get(f"/supervision?desde={day}&hasta={day}")).text()
    assert 'id="kpi-calls">4<' in page and 'id="kpi-out-attempts">6<' in page and 'id="kpi-out-calls">3<' in page
    assert 'id="outbound-outcomes"' in page and "Pidió no recibir llamadas" in page
    detail = await (await client.get(f"/supervision/llamadas/{known.ids['E']}")).text()
    assert "Saliente (devolución de llamada" in detail
