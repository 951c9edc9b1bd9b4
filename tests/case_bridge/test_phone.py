"""CaseRecorder: calls recorded through the service, and kept in the node's outbox while the database is away."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from case_bridge.service import CaseService
from ivr.call.leg import CallInfo
from ivr.call.recorder import CaseRecorder

from .conftest import TEST_TRAMITES, pg_url


class TcpProxy:
    """A TCP relay in front of PostgreSQL that the test can cut and restore (a database that goes away)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


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
async def test_postgres_cut_mid_call_then_restored(pg_database: str, tmp_path: Path) -> None:
    """PostgreSQL reached through a relay that is cut in the middle of a call and restored: no committed turn is
    lost, nothing is stored twice, order is kept, and the turns spoken during the cut are not delayed."""
    proxy = TcpProxy(5432)
    await proxy.start()
    svc = CaseService.from_url(pg_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
    await asyncio.to_thread(svc.upsert_tramites, TEST_TRAMITES)
    rec = CaseRecorder(svc, data_dir=tmp_path, name="w1")
    await rec.start()
    call_id = "cut-1@test"
    await rec.call_started(_info(call_id))
    await rec.add_turn(call_id, "portal", "antes 1")
    await rec.add_turn(call_id, "caller", "antes 2")
    opened = await asyncio.to_thread(svc.open_case, "licencia_conducir", "phone", call_id=call_id)
    assert rec.pending == 0

    await proxy.stop()
    loop = asyncio.get_running_loop()
    for i in range(4):
        t0 = loop.time()
        await rec.add_turn(call_id, "caller", f"durante {i}")
        assert loop.time() - t0 < 5.0      # a refused connection is noticed quickly; the reply isn't held up
    await rec.link_case(call_id, opened.case.folio)
    assert rec.pending >= 4
    await asyncio.sleep(0.5)              # the replayer is retrying against the cut relay meanwhile
    assert rec.pending >= 4

    await proxy.start()                    # same port again: the database is back
    await rec.add_turn(call_id, "portal", "después 1")
    await rec.call_ended(call_id, "completed")
    assert await rec.wait_drained(30)
    # the relay runs on this event loop: synchronous service calls go to a thread
    texts = [t.text for t in await asyncio.to_thread(svc.transcript, call_id)]
    assert texts == ["antes 1", "antes 2", "durante 0", "durante 1", "durante 2", "durante 3", "después 1"]
    call = await asyncio.to_thread(svc.get_call, call_id)
    assert call is not None and call.disposition == "completed" and call.folio == opened.case.folio
    assert rec.outbox.dead_letters() == []
    await rec.stop()
    await asyncio.to_thread(svc.close)
    await proxy.stop()


def test_pg_url_helper() -> None:
    assert pg_url("x").endswith("/x")

