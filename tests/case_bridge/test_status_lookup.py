"""The event-loop status lookup (case_bridge.status_lookup) answers what `status_for` answers, with the same
lockout, also when Redis is unreachable or a database connection was closed under it; its lean Redis client
matches pipelined replies to their callers. Real PostgreSQL and Redis."""
from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from redis.exceptions import RedisError

from case_bridge import folio as folios
from case_bridge.resp import LeanRedis
from case_bridge.service import CaseService
from case_bridge.status_lookup import StatusLookup
from case_bridge.views import CitizenInfo
from testkit.db import REDIS_URL, case_service
from testkit.ports import free_port_block

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_svc(pg_database: str) -> Iterator[CaseService]:
    svc = case_service(pg_database, "lookup")
    yield svc
    svc.close()


@pytest.fixture
async def lookup(pg_svc: CaseService) -> AsyncIterator[StatusLookup]:
    found = StatusLookup.for_service(pg_svc)
    assert found is not None
    yield found
    await found.close()


def _wrong(pin: str) -> str:
    return str((int(pin) + 1) % 10000).zfill(4)


async def test_same_answers_as_status_for(pg_svc: CaseService, lookup: StatusLookup) -> None:
    opened = pg_svc.open_case("acta_nacimiento", "kiosk", citizen=CitizenInfo("Ana Ruiz"))
    folio, pin = opened.case.folio, opened.pin
    got = await lookup.status(folio, pin=pin, client="ip:192.0.2.1")
    want = pg_svc.status_for(folio, pin=pin, client="ip:192.0.2.1", timeline=False)
    assert got.reason == want.reason == "ok" and got.case == want.case
    assert got.case is not None and got.case.created_at.utcoffset() is not None and got.case.history
    assert (await lookup.status("1234", pin=pin, client=None)).reason == "malformed"
    unknown = folios.new_folio()
    assert pg_svc.find_case(unknown) is None
    assert (await lookup.status(unknown, pin=pin, client=None)).reason == "denied"
    first = await lookup.status(folio, pin=_wrong(pin), client="ip:192.0.2.1")
    assert first.reason == "denied" and first.attempts_left == 2
    assert (await lookup.status(folio, pin=pin, client="ip:192.0.2.1")).reason == "ok"   # clears the count
    for left in (2, 1):
        assert (await lookup.status(folio, pin=_wrong(pin), client="ip:192.0.2.1")).attempts_left == left
    assert (await lookup.status(folio, pin=_wrong(pin), client="ip:192.0.2.1")).reason == "locked"
    locked = await lookup.status(folio, pin=pin, client="ip:192.0.2.1")
    assert locked.reason == "locked" and locked.case is None and (locked.retry_after_s or 0) > 0
    assert pg_svc.status_for(folio, pin=pin, timeline=False).reason == "locked"      # one lock for both paths


async def test_redis_unreachable_falls_back_to_database_counters(pg_database: str) -> None:
    dead = f"redis://127.0.0.1:{free_port_block(1)}/0"
    svc = case_service(pg_database, "lookup-noredis", redis_url=dead)
    lookup = StatusLookup.for_service(svc)
    assert lookup is not None
    try:
        opened = svc.open_case("acta_nacimiento", "kiosk")
        assert (await lookup.status(opened.case.folio, pin=opened.pin, client=None)).reason == "ok"
        reasons = [(await lookup.status(opened.case.folio, pin=_wrong(opened.pin), client=None)).reason
                   for _ in range(3)]
        assert reasons == ["denied", "denied", "locked"] and svc.limiter.last_backend == "database"
        assert (await lookup.status(opened.case.folio, pin=opened.pin, client=None)).reason == "locked"
    finally:
        await lookup.close()
        svc.close()


async def test_a_connection_closed_by_the_server_costs_no_error(pg_svc: CaseService, lookup: StatusLookup,
                                                                 pg_database: str) -> None:
    opened = pg_svc.open_case("acta_nacimiento", "kiosk")
    assert (await lookup.status(opened.case.folio, pin=opened.pin, client=None)).reason == "ok"
    name = pg_database.rsplit("/", 1)[1]
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
                               "AND pid <> pg_backend_pid() AND application_name = ''", (name,)).fetchone()
    assert killed is not None and killed[0] >= 1
    await asyncio.sleep(0.1)
    assert (await lookup.status(opened.case.folio, pin=opened.pin, client=None)).reason == "ok"


async def test_lean_redis_pipelines_and_reloads_scripts() -> None:
    client = LeanRedis(REDIS_URL, 1.0)
    try:
        replies = await asyncio.gather(*(client.call("ECHO", f"m{i}") for i in range(200)))
        assert replies == [f"m{i}".encode() for i in range(200)]
        script = f"return {{'{uuid.uuid4().hex}', #KEYS}}"          # never loaded: EVALSHA says NOSCRIPT
        sha = hashlib.sha1(script.encode()).hexdigest()
        reply = await client.evalsha(script, sha, ["a", "b"])
        assert reply[1] == 2 and await client.evalsha(script, sha, ["a"]) == [reply[0], 1]
    finally:
        await client.close()


async def _late_loop_then_silent_server(timeout_s: float) -> tuple[Any, str]:
    """A reply that arrived while the loop was blocked, then a server that never answers."""
    client = LeanRedis(REDIS_URL, timeout_s)
    silent = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    mute = LeanRedis(f"redis://127.0.0.1:{port}/0", timeout_s)
    try:
        await client.call("PING")                       # connected: begin() writes at once
        pending = client.begin("ECHO", "late")
        time.sleep(timeout_s * 2)  # noqa: ASYNC251 -- on purpose: the loop busy past the timeout, the reply waiting
        late = await pending
        t0 = time.monotonic()
        try:
            await mute.call("PING")
            silent_result = "answered"
        except RedisError:
            silent_result = f"RedisError after {time.monotonic() - t0:.2f} s"
        return late, silent_result
    finally:
        await client.close()
        await mute.close()
        silent.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_late_loop_is_not_a_redis_timeout(loop: str) -> None:
    """The loop blocked past the timeout while Redis had answered (a busy machine): the waiting reply is taken,
    not counted as Redis down (which sent 2 s of lookups to the database path). A Redis that doesn't answer
    still fails in time (at most twice the timeout)."""
    factory = asyncio.new_event_loop if loop == "asyncio" else pytest.importorskip("uvloop").new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        late, silent = runner.run(_late_loop_then_silent_server(0.1))
    assert late == b"late"
    assert silent.startswith("RedisError") and float(silent.split()[2]) < 0.3, silent
