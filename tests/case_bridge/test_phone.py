"""CaseRecorder: calls recorded through the service, and kept in the node's outbox while the database is away."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from case_bridge.service import CaseService
from ivr.call.db_threads import DbThreads, DbTimeout
from ivr.call.leg import CallInfo
from ivr.call.recorder import DB_WAIT_S, CaseRecorder
from testkit.tcpproxy import ChaosProxy

from .conftest import TEST_TRAMITES, pg_url


def _info(call_id: str) -> CallInfo:
    return CallInfo(call_id=call_id, caller="2281112233", called="veratur", node="w0")


async def test_recorder_writes_a_whole_call(svc: CaseService, tmp_path: Path) -> None:
    rec = CaseRecorder(svc, data_dir=tmp_path, name="t")
    await rec.start()
    call_id = "rec-1@test"
    assert await rec.call_started(_info(call_id)) is None
    await rec.add_turn(call_id, "portal", "Bienvenido al portal de Veracruz.")
    await rec.add_turn(call_id, "caller", "quiero sacar mi licencia", "tramite_licencia", 0.88)
    opened = await asyncio.to_thread(svc.open_case, "licencia_conducir", "phone", call_id=call_id,
                                     idempotency_key=f"{call_id}:open", summary="solicitó licencia de conducir")
    await rec.link_case(call_id, opened.case.folio)
    await rec.link_case(call_id, "1234")            # malformed: ignored, the call goes on
    await rec.call_ended(call_id, "completed")
    assert rec.pending == 0
    turns = svc.transcript(call_id)
    assert [(t.speaker, t.intent) for t in turns] == [("portal", None), ("caller", "tramite_licencia")]
    call = svc.get_call(call_id)
    assert call is not None and call.folio == opened.case.folio and call.disposition == "completed"
    assert call.caller_masked == "******2233"
    # a retried start of the same call finds its case
    assert await rec.call_started(_info(call_id)) == opened.case.folio
    await rec.stop()


async def test_dead_database_port_keeps_the_call_going_and_replays_later(tmp_path: Path, sqlite_database: str) -> None:
    """The worker's database URL points at a dead port: everything lands in the outbox, fsync'd; a recorder
    started later with a working database (a restarted worker) replays it in order."""
    dead = CaseService.from_url("postgresql+psycopg://postgres@127.0.0.1:1/none")
    rec = CaseRecorder(dead, data_dir=tmp_path, name="w0")
    await rec.start()
    call_id = "dead-1@test"
    await rec.call_started(_info(call_id))
    for i in range(5):
        await rec.add_turn(call_id, "caller" if i % 2 else "portal", f"turno {i}")
    await rec.call_ended(call_id, "abandoned")
    assert rec.pending == 7
    await rec.stop()
    dead.close()

    good = CaseService.from_url(sqlite_database)
    rec2 = CaseRecorder(good, data_dir=tmp_path, name="w0")
    await rec2.start()
    assert await rec2.wait_drained(30)
    assert [t.text for t in good.transcript(call_id)] == [f"turno {i}" for i in range(5)]
    call = good.get_call(call_id)
    assert call is not None and call.disposition == "abandoned"
    await rec2.stop()
    good.close()


@pytest.mark.postgres
@pytest.mark.parametrize("outage", ["cut", "blackhole"])
async def test_postgres_outage_mid_call_then_restored(pg_database: str, tmp_path: Path, outage: str) -> None:
    """PostgreSQL reached through a relay (testkit.tcpproxy) that is cut (connections reset: a stopped server) or
    blackholed (connections open, nothing answered: a hung server, a partition) in the middle of a call, then
    restored: no turn is lost, nothing is stored twice, order is kept, and no write holds the call up for more
    than the recorder's bounded wait. Before DB_WAIT_S a blackholed write waited until the session's 5 s
    recorder timeout cancelled it, and the write was then held by nobody (not in the outbox)."""
    with ChaosProxy(5432) as proxy:
        svc = CaseService.from_url(proxy.via(pg_database))
        await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
        rec = CaseRecorder(svc, data_dir=tmp_path, name="w1")
        await rec.start()
        call_id = f"{outage}-1@test"
        await rec.call_started(_info(call_id))
        await rec.add_turn(call_id, "portal", "antes 1")
        await rec.add_turn(call_id, "caller", "antes 2")
        opened = await asyncio.to_thread(svc.open_case, "licencia_conducir", "phone", call_id=call_id)
        assert rec.pending == 0

        await asyncio.to_thread(getattr(proxy, outage))
        waits = []
        for i in range(4):
            t0 = time.monotonic()
            await rec.add_turn(call_id, "caller", f"durante {i}")
            waits.append(time.monotonic() - t0)
        await rec.link_case(call_id, opened.case.folio)
        print(f"\n{outage}: waits for the writes during the outage {[round(w, 3) for w in waits]} s")
        # never the session's 5 s: the first write waits for the bound at most, the others queue behind it
        assert max(waits) < DB_WAIT_S + 2.0, waits
        assert rec.pending == 5                # every write of the outage is in the outbox, none is held elsewhere
        await asyncio.sleep(0.5)              # the replayer is retrying against the relay meanwhile
        assert rec.pending == 5

        await asyncio.to_thread(proxy.restore)     # the database is back
        await rec.add_turn(call_id, "portal", "después 1")
        await rec.call_ended(call_id, "completed")
        assert await rec.wait_drained(30)
        texts = [t.text for t in await asyncio.to_thread(svc.transcript, call_id)]
        assert texts == ["antes 1", "antes 2", "durante 0", "durante 1", "durante 2", "durante 3", "después 1"]
        call = await asyncio.to_thread(svc.get_call, call_id)
        assert call is not None and call.disposition == "completed" and call.folio == opened.case.folio
        assert rec.outbox.dead_letters() == []
        await rec.stop()
        await asyncio.to_thread(svc.close)


async def test_db_threads_bound_the_wait_and_drop_what_never_started() -> None:
    """The seam under the recorder's bound: a call that hangs raises DbTimeout after wait_s (its thread left to
    finish on its own), a call still queued behind it when given up on never runs, and the threads are daemons
    (a hung one cannot hold the worker's exit)."""
    pool = DbThreads(1, "db-test", wait_s=0.2)
    release, ran = threading.Event(), []
    with pytest.raises(DbTimeout):
        await pool.run(release.wait, timeout=10)            # the only thread is stuck here
    with pytest.raises(DbTimeout):
        await pool.run(ran.append, object=1)               # queued behind it, given up on
    release.set()
    assert await pool.run(lambda: "answered") == "answered"
    assert ran == []
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("db-test"))
    pool.shutdown()


def test_pg_url_helper() -> None:
    assert pg_url("x").endswith("/x")

