"""Folio verification behind a shared address (carrier NAT, the web's reverse proxy): after many failures from one
address its lookups are slowed, never refused, so the citizen with the right PIN still gets in (issue 13: 10
failures locked the address for 15 minutes, even the correct PIN). Real web app (aiohttp test server), real case
service on SQLite and PostgreSQL with Redis counters. The per-folio lock (3 tries) is tested in test_web.py."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from case_bridge import folio as folios
from case_bridge.ratelimit import CLIENT_MAX_DELAY_S, CLIENT_MAX_FAILURES, client_delay_s
from case_bridge.service import CaseService
from case_bridge.views import CitizenInfo
from foundation.config import load_settings
from veratur.webapp import build_app


@pytest.fixture
async def client(svc: CaseService) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(load_settings(), svc, secret=uuid.uuid4().bytes * 2)
    async with TestClient(TestServer(app)) as c:
        yield c


def test_the_delay_grows_and_is_bounded() -> None:
    delays = [client_delay_s(n) for n in range(0, CLIENT_MAX_FAILURES + 40)]
    assert delays[:CLIENT_MAX_FAILURES] == [0.0] * CLIENT_MAX_FAILURES
    assert delays[CLIENT_MAX_FAILURES] == 1.0 and delays == sorted(delays) and max(delays) == CLIENT_MAX_DELAY_S


async def test_many_failures_from_one_address_slow_it_but_the_right_pin_gets_in(
        client: TestClient, svc: CaseService) -> None:  # type: ignore[type-arg]
    opened = svc.open_case("acta_nacimiento", "phone", citizen=CitizenInfo("María López", curp="LOPM850505MVZPRR07"))
    for _ in range(CLIENT_MAX_FAILURES):            # someone at the same address walks through folios
        resp = await client.get(f"/open311/v2/requests/{folios.new_folio()}.json", headers={"X-Veratur-PIN": "0000"})
        assert resp.status == 404
    started = time.monotonic()
    resp = await client.get(f"/open311/v2/requests/{opened.case.folio}.json", headers={"X-Veratur-PIN": opened.pin})
    took = time.monotonic() - started
    print(f"\nright PIN after {CLIENT_MAX_FAILURES} failures from the address: {resp.status} in {took:.2f} s")
    assert resp.status == 200, await resp.text()                # before: 429 for 15 minutes
    assert took >= client_delay_s(CLIENT_MAX_FAILURES) * 0.9    # but the address is slowed
    body = await resp.json()
    assert body[0]["service_request_id"] == opened.case.folio
