"""`CaseRecorder`: the IVR engine's `ivr.call.records.CallRecorder` over the case-bridge service.
(`EscalationRecorder` below extends it with the escalation journal, sharing the outbox.)

Every write goes to the database through `CaseService` (on one of the recorder's own threads, `DbThreads`, so the
event loop keeps streaming audio), and the wait for it is bounded (`DB_WAIT_S`). If the database can't be reached,
or does not answer in time (a hung server, a partition: nothing is refused, nothing comes back), the write goes to
the node's `Outbox` instead and the call goes on; a replay task drains the outbox in order once the database
answers again. While anything is pending, new writes
queue behind it, so the database always sees a call's writes in the order the call made them. Each write carries
its own idempotency (SIP Call-ID, turn key `call_id#n`, one interaction per call and case), so a replay that
overlaps a write which did reach the database stores nothing twice.

    recorder = CaseRecorder(service, data_dir=settings.path(settings.data_dir), name=f"{settings.node_name}-w0")
    await recorder.start()        # replays what a previous run left behind
    ...                           # hand it to the call sessions
    await recorder.stop()
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from case_bridge import folio as folios
from case_bridge.errors import CaseBridgeError, DatabaseUnavailable
from case_bridge.escalation import EscalationDesk
from case_bridge.models import utcnow
from case_bridge.service import CaseService
from foundation.logs import kv, mask_phone
from ivr.call.db_threads import DbThreads, DbTimeout
from ivr.call.leg import CallInfo
from ivr.call.outbox import Outbox
from ivr.call.records import Disposition, Speaker

log = logging.getLogger("ivr.call.recorder")

REPLAY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)      # the last repeats: a database back is noticed within ~2 s
# A write normally commits in a few ms (20-70 ms with a reconnect); one not answered in this long is kept in the
# outbox instead: the caller's reply waits at most this for the database (tests/chaos/test_storage_outage.py).
DB_WAIT_S = 0.5
DB_THREADS = 4               # the calls of a worker (pjsua2 holds 4) and the replayer: more only queue
MAX_UNEXPECTED_ERRORS = 5


class CaseRecorder:
    """Records calls, transcript turns and their case links; durable even when the database is away."""

    def __init__(self, service: CaseService, *, data_dir: Path, name: str) -> None:
        self.service = service
        self.name = name
        self.outbox = Outbox(Path(data_dir) / f"outbox-{name}.sqlite")
        self._db = DbThreads(DB_THREADS, f"db-{name}", DB_WAIT_S)
        self._turn_seq: dict[str, int] = {}
        self._replayer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._ops: dict[str, Callable[..., Any]] = {
            "link_call": service.link_call,
            "add_turn": service.add_turn,
            "link_call_case": service.link_call_case,
            "close_call": service.close_call,
            "call_stats": service.record_call_stats,
        }

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if len(self.outbox):
            log.info(kv(event="outbox_replay_on_start", recorder=self.name, pending=len(self.outbox)))
            self._kick()
        else:
            self._drained.set()

    async def stop(self) -> None:
        """Stop replaying (pending entries stay in the outbox file for the next start)."""
        if self._replayer is not None:
            self._replayer.cancel()
            try:
                await self._replayer
            except asyncio.CancelledError:
                pass
            self._replayer = None
        self._db.shutdown()
        await asyncio.to_thread(self.outbox.close)

    @property
    def pending(self) -> int:
        return len(self.outbox)

    async def wait_drained(self, within_s: float) -> bool:
        """For tests and shutdown: wait until the outbox is empty."""
        try:
            await asyncio.wait_for(self._drained.wait(), within_s)
        except TimeoutError:
            return False
        return True

    # -- CallRecorder ---------------------------------------------------------------------------------------
    async def call_started(self, info: CallInfo) -> str | None:
        self._turn_seq.setdefault(info.call_id, 0)
        now = utcnow()
        await self._record("link_call", call_id=info.call_id, caller=info.caller, called=info.called,
                           node=info.node, started_at=now, answered_at=now)
        log.info(kv(event="call_recorded", call_id=info.call_id, caller=mask_phone(info.caller), node=info.node))
        # A folio is known only if this call was already linked (a retried start); headers from the caller are
        # not trusted to name a case.
        if self.pending:
            return None
        try:
            call = await self._db.run(self.service.get_call, call_id=info.call_id)
        except (DatabaseUnavailable, DbTimeout):
            return None
        return call.folio if call else None

    async def add_turn(self, call_id: str, speaker: Speaker, text: str, intent: str | None = None,
                       confidence: float | None = None) -> None:
        seq = self._turn_seq.get(call_id, 0) + 1
        self._turn_seq[call_id] = seq
        await self._record("add_turn", call_id=call_id, speaker=speaker, text=text, intent=intent,
                           confidence=confidence, at=utcnow(), idempotency_key=f"{call_id}#{seq}")

    async def link_case(self, call_id: str, folio: str) -> None:
        try:
            folio = folios.normalize(folio)
        except folios.MalformedFolio:
            log.warning(kv(event="link_case_malformed_folio", call_id=call_id))
            return
        await self._record("link_call_case", call_id=call_id, folio=folio)

    async def call_stats(self, call_id: str, stats: dict[str, Any]) -> None:
        """The call's detail figures (ivr.call.stats.CallStats.summary), sent once just before `call_ended`."""
        await self._record("call_stats", call_id=call_id, stats={**stats, "worker": stats.get("worker") or self.name})

    async def call_ended(self, call_id: str, disposition: Disposition, transfer_target: str | None = None) -> None:
        await self._record("close_call", call_id=call_id, disposition=disposition, transfer_target=transfer_target,
                           ended_at=utcnow())
        self._turn_seq.pop(call_id, None)

    # -- writing ----------------------------------------------------------------------------------------------
    async def _record(self, op: str, **args: Any) -> None:
        """Durable when this returns: committed in the database, or fsync'd in the outbox."""
        if not self.pending:
            try:
                await self._db.run(self._ops[op], **args)
                return
            except (DatabaseUnavailable, DbTimeout) as exc:
                log.warning(kv(event="db_unavailable_outbox", call_id=args.get("call_id"), op=op,
                               error=str(exc)[:120]))
            except CaseBridgeError as exc:
                # refused for good (e.g. an unknown folio): recording must never break the call
                log.error(kv(event="record_refused", call_id=args.get("call_id"), op=op, error=str(exc)[:200]))
                return
        await asyncio.to_thread(self.outbox.append, op, args)
        self._kick()

    def _kick(self) -> None:
        self._drained.clear()
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.create_task(self._replay(), name=f"outbox-replay-{self.name}")

    async def _replay(self) -> None:
        failures = 0
        unexpected: dict[int, int] = {}
        while True:
            batch = await asyncio.to_thread(self.outbox.peek)
            if not batch:
                self._drained.set()
                log.info(kv(event="outbox_drained", recorder=self.name))
                return
            for entry in batch:
                try:
                    await self._db.run(self._ops[entry.op], **entry.args)
                except (DatabaseUnavailable, DbTimeout):
                    delay = REPLAY_BACKOFF_S[min(failures, len(REPLAY_BACKOFF_S) - 1)]
                    failures += 1
                    await asyncio.sleep(delay)
                    break
                except CaseBridgeError as exc:
                    log.error(kv(event="outbox_dead_letter", op=entry.op, call_id=entry.args.get("call_id"),
                                 error=str(exc)[:200]))
                    await asyncio.to_thread(self.outbox.bury, entry.seq, f"{type(exc).__name__}: {exc}")
                    continue
                except Exception as exc:  # a bug or an unforeseen driver error: retry a few times, then set aside
                    unexpected[entry.seq] = unexpected.get(entry.seq, 0) + 1
                    log.exception(kv(event="outbox_replay_error", op=entry.op, attempt=unexpected[entry.seq]))
                    if unexpected[entry.seq] >= MAX_UNEXPECTED_ERRORS:
                        await asyncio.to_thread(self.outbox.bury, entry.seq, f"{type(exc).__name__}: {exc}")
                        continue
                    await asyncio.sleep(REPLAY_BACKOFF_S[-1])
                    break
                failures = 0
                await asyncio.to_thread(self.outbox.remove, entry.seq)


class EscalationRecorder(CaseRecorder):
    """The engine's recorder with the escalation journal (`ivr.call.escalation.EscalationJournal`).

    The three writes go through the CaseRecorder's outbox like every other call write, so the queue entry is
    never written before the call record it points to, and survives a database outage."""

    def __init__(self, service: CaseService, *, data_dir: Path, name: str) -> None:
        super().__init__(service, data_dir=data_dir, name=name)
        self.desk = EscalationDesk(service)
        self._ops.update({"escalation_requested": self.desk.enqueue,
                          "escalation_result": self.desk.record_result,
                          "callback_requested": self.desk.record_callback})

    async def escalation_requested(self, call_id: str, reason: str, target: str, mode: str) -> None:
        await self._record("escalation_requested", call_id=call_id, reason=reason, target=target, mode=mode)

    async def escalation_result(self, call_id: str, ok: bool, status_code: int, detail: str) -> None:
        await self._record("escalation_result", call_id=call_id, ok=ok, status_code=status_code,
                           detail=detail[:200])

    async def callback_requested(self, call_id: str, accepted: bool, phone: str | None) -> None:
        await self._record("callback_requested", call_id=call_id, accepted=accepted, phone=phone)
