"""A call degraded by recognizer overload shows on its call-detail record (migration 0011): the engine's figures
(ivr.call.stats: hold phrases said, decodes dropped and asked on the keypad) go through the real recorder and its
outbox to `call_records`, and a supervisor sees them on the call page, finds the degraded calls with the search's
"saturadas" filter, and gets them in the CSV export and the JSON API."""
from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from case_bridge.call_records import CallQuery
from case_bridge.errors import InvalidInput
from case_bridge.service import CaseService
from foundation.config import load_settings
from ivr.call.leg import CallInfo
from ivr.call.recorder import CaseRecorder
from ivr.call.stats import CallStats
from veratur.webapp import build_app


async def record(svc: CaseService, tmp_path: Path, *, holds: int, dropped: int) -> str:
    """One call through the engine's recorder: a speech turn, a keypad turn, and the overload counts given."""
    recorder = CaseRecorder(svc, data_dir=tmp_path, name=f"w{uuid.uuid4().hex[:4]}")
    await recorder.start()
    call_id = f"{uuid.uuid4().hex}@127.0.0.1"
    await recorder.call_started(CallInfo(call_id, "2281112233", "veratur", "nodo1"))
    stats = CallStats()
    stats.ask(["¿De qué ciudad quiere información?"])
    stats.caller_turn(dtmf=False, expect_kind="city", text="xalapa", intent="inform_city")
    stats.caller_turn(dtmf=True, expect_kind="city", text=None, intent="dtmf")
    stats.asr_holds, stats.asr_dropped = holds, dropped
    await recorder.call_stats(call_id, stats.summary([0.4, 0.9]))
    await recorder.call_ended(call_id, "completed")
    await recorder.stop()
    return call_id


async def test_the_overload_figures_reach_the_record_and_the_search(svc: CaseService, tmp_path: Path) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    degraded = await record(svc, tmp_path, holds=2, dropped=1)
    held_only = await record(svc, tmp_path, holds=1, dropped=0)
    clean = await record(svc, tmp_path, holds=0, dropped=0)
    d = svc.call_detail(degraded)
    assert d is not None and (d.asr_holds, d.asr_dropped, d.degraded, d.turns) == (2, 1, True, 2)
    h = svc.call_detail(held_only)
    assert h is not None and (h.asr_holds, h.asr_dropped, h.degraded) == (1, 0, True)
    c = svc.call_detail(clean)
    assert c is not None and (c.asr_holds, c.asr_dropped, c.degraded) == (0, 0, False)
    found = {x.call_id for x in svc.search_calls(CallQuery(since=since, degraded=True)).calls}
    assert {degraded, held_only} <= found and clean not in found
    every = {x.call_id for x in svc.search_calls(CallQuery(since=since)).calls}
    assert {degraded, held_only, clean} <= every
    # an outbox replay overwrites; a bad count is refused (the outbox sets it aside)
    svc.record_call_stats(degraded, {"asr_holds": 2, "asr_dropped": 1, "turns_count": 2})
    d = svc.call_detail(degraded)
    assert d is not None and (d.asr_holds, d.asr_dropped) == (2, 1)
    for bad in ({"asr_dropped": -1}, {"asr_holds": "many"}):
        with pytest.raises(InvalidInput):
            svc.record_call_stats(degraded, bad)


@pytest.fixture
def db_url(sqlite_database: str) -> str:
    return sqlite_database          # the pages over SQLite only, as tests/case_bridge/test_ops_web.py


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _login_supervisor(client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    name = f"supervisor{uuid.uuid4().hex[:8]}"
    svc.create_staff(name, "contraseña-larga", "supervisor")
    page = await (await client.get("/staff/login")).text()
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = await client.post("/staff/login", data={"_csrf": token.group(1), "usuario": name,
                                                 "contrasena": "contraseña-larga"}, allow_redirects=False)
    assert r.status == 303


async def test_a_supervisor_sees_which_calls_were_degraded(client: TestClient, svc: CaseService,  # type: ignore[type-arg]
                                                           tmp_path: Path) -> None:
    degraded = await record(svc, tmp_path, holds=2, dropped=1)
    clean = await record(svc, tmp_path, holds=0, dropped=0)
    await _login_supervisor(client, svc)
    page = await (await client.get(f"/supervision/llamadas/{degraded}")).text()
    assert re.search(r'id="call-degraded">sí: 2 esperas .*, 1 respuesta pedida por teclado<', page)
    page = await (await client.get(f"/supervision/llamadas/{clean}")).text()
    assert 'id="call-degraded">no<' in page
    link_d, link_c = (f'href="/supervision/llamadas/{quote(x)}"' for x in (degraded, clean))
    r = await client.get("/supervision/llamadas?saturadas=1")
    listing = await r.text()
    assert r.status == 200 and link_d in listing and link_c not in listing
    assert "<td>2 / 1</td>" in listing
    listing = await (await client.get("/supervision/llamadas")).text()
    assert link_d in listing and link_c in listing
    r = await client.get("/supervision/llamadas.csv")
    rows = {row["call_id"]: row for row in csv.DictReader(io.StringIO((await r.text()).lstrip("\ufeff")))}
    assert (rows[degraded]["asr_holds"], rows[degraded]["asr_dropped"]) == ("2", "1")
    assert (rows[clean]["asr_holds"], rows[clean]["asr_dropped"]) == ("0", "0")
    api = await (await client.get("/api/ops/calls?degraded=1")).json()
    by_id = {x["call_id"]: x for x in api["calls"]}
    assert degraded in by_id and clean not in by_id
    assert (by_id[degraded]["asr_holds"], by_id[degraded]["asr_dropped"]) == (2, 1)
