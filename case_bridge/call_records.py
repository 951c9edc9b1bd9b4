"""Call-detail records: the per-call figures the engine writes when a call ends, and the search over them.

The engine sends one `record_call_stats` per call (through its recorder's outbox, like transcript turns) just before
`close_call`; it is idempotent (a replay overwrites the same figures and tallies). Searches return
`CallDetail` rows with the caller already masked: no page or export ever sees a full number.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, select
from sqlalchemy.orm import Session

from case_bridge.errors import InvalidInput
from case_bridge.models import DIRECTIONS, CallRecord, CallTally, Case, TranscriptTurn
from case_bridge.rollup import track
from case_bridge.unit_of_work import UnitOfWork, load_call
from foundation.vocabulary import DISPOSITIONS, TALLY_KINDS, TRANSFER_REASONS

MAX_PAGE = 500
MAX_TALLY_KEY = 200
MAX_TALLIES_PER_CALL = 400      # a runaway call (hundreds of re-prompts) cannot flood the table

_COUNTERS = ("turns_count", "speech_turns", "dtmf_turns", "no_match_count", "no_input_count", "barge_ins",
             "asr_holds", "asr_dropped")


@dataclass(frozen=True, slots=True)
class CallDetail:
    """One call as the supervisor sees it (caller masked)."""
    call_id: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    caller: str
    node: str
    worker: str
    disposition: str | None
    folio: str | None
    tramite_id: str | None
    turns: int
    speech_turns: int
    dtmf_turns: int
    no_match: int
    no_input: int
    barge_ins: int
    latency_p50_ms: int | None
    latency_max_ms: int | None
    transfer_target: str | None
    transfer_reason: str | None
    intents: tuple[str, ...]
    direction: str = "inbound"             # outbound: a call the node placed (a callback)
    asr_holds: int = 0                     # recognizer overload: hold phrases said ("Un momento, por favor.")
    asr_dropped: int = 0                   # recognizer overload: utterances not decoded, asked on the keypad

    @property
    def degraded(self) -> bool:
        """The recognizer was overloaded during this call: the caller heard a hold phrase or a keypad fallback."""
        return bool(self.asr_holds or self.asr_dropped)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("started_at", "answered_at", "ended_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["intents"] = list(self.intents)
        return out


@dataclass(frozen=True, slots=True)
class CallQuery:
    """Filters of the call search, the JSON API and the CSV export (all optional, combined with AND)."""
    since: datetime | None = None
    until: datetime | None = None          # exclusive
    disposition: str | None = None
    folio: str | None = None
    intent: str | None = None
    text: str | None = None                # words in the transcript (case-insensitive substring)
    worker: str | None = None
    direction: str | None = None           # inbound | outbound
    degraded: bool = False                 # only calls with a hold phrase or a dropped decode (recognizer overload)


@dataclass(frozen=True, slots=True)
class CallPage:
    total: int
    page: int
    per_page: int
    calls: tuple[CallDetail, ...]


class CallRecords:
    """The call-detail topic of `CaseService`."""

    uow: UnitOfWork

    def record_call_stats(self, call_id: str, stats: Mapping[str, Any]) -> None:
        """Store a call's figures: counters, latency p50/max (ms), worker, transfer reason, and `tallies` as
        [[kind, key, n], ...]. Unknown keys are ignored; bad values raise InvalidInput (the outbox sets it aside)."""
        values: dict[str, Any] = {}
        for key in _COUNTERS:
            values[key] = _count(stats.get(key, 0), key)
        for key in ("latency_p50_ms", "latency_max_ms"):
            raw = stats.get(key)
            values[key] = None if raw is None else _count(raw, key)
        reason = stats.get("transfer_reason")
        if reason is not None and reason not in TRANSFER_REASONS:
            reason = "caller_request"
        values["transfer_reason"] = reason
        worker = str(stats.get("worker") or "")[:64]
        tallies = _tallies(stats.get("tallies") or ())

        def work(s: Session) -> None:
            call = load_call(s, call_id)
            with track(s, call):     # usually before the close; a late or replayed write corrects the rollup
                for key, value in values.items():
                    setattr(call, key, value)
                if worker:
                    call.worker = worker
                s.execute(delete(CallTally).where(CallTally.call_id == call.id))   # a replay replaces, never adds
                s.add_all(CallTally(call_id=call.id, kind=k, key=key, n=n) for (k, key), n in tallies.items())

        self.uow.write(work)

    def search_calls(self, query: CallQuery, *, page: int = 1, per_page: int = 50) -> CallPage:
        page, per_page = max(1, page), min(max(1, per_page), MAX_PAGE)
        with self.uow.session() as s:
            base = _filtered(select(CallRecord.id), query)
            total = int(s.execute(select(func.count()).select_from(base.subquery())).scalar_one())
            ids = [r[0] for r in s.execute(base.order_by(CallRecord.started_at.desc(), CallRecord.id.desc())
                                           .limit(per_page).offset((page - 1) * per_page))]
            return CallPage(total, page, per_page, tuple(_details(s, ids)))

    def iter_calls(self, query: CallQuery, *, batch: int = 1000) -> Sequence[CallDetail]:
        """Every call matching `query`, oldest first (the CSV export), read in batches."""
        out: list[CallDetail] = []
        last = 0
        with self.uow.session() as s:
            while True:
                ids = [r[0] for r in s.execute(_filtered(select(CallRecord.id), query)
                                               .where(CallRecord.id > last).order_by(CallRecord.id).limit(batch))]
                if not ids:
                    return out
                out.extend(_details(s, ids))
                last = ids[-1]

    def call_detail(self, call_id: str) -> CallDetail | None:
        with self.uow.session() as s:
            row = s.execute(select(CallRecord.id).where(CallRecord.sip_call_id == call_id)).first()
            return _details(s, [row[0]])[0] if row else None


def _count(raw: Any, name: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a whole number") from None
    if value < 0 or value > 10_000_000:
        raise InvalidInput(f"{name} out of range")
    return value


def _tallies(raw: Any) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for item in list(raw)[:MAX_TALLIES_PER_CALL]:
        try:
            kind, key, n = item
        except (TypeError, ValueError):
            raise InvalidInput("tallies: [kind, key, n] triples") from None
        if kind not in TALLY_KINDS:
            raise InvalidInput(f"tally kind must be one of {TALLY_KINDS}")
        key = str(key).strip()[:MAX_TALLY_KEY]
        if key:
            out[(kind, key)] = out.get((kind, key), 0) + _count(n, "tally")
    return out


def _filtered(q: Select[Any], query: CallQuery) -> Select[Any]:
    conds = []
    if query.since is not None:
        conds.append(CallRecord.started_at >= query.since)
    if query.until is not None:
        conds.append(CallRecord.started_at < query.until)
    if query.disposition:
        if query.disposition not in DISPOSITIONS:
            raise InvalidInput(f"disposition must be one of {DISPOSITIONS}")
        conds.append(CallRecord.disposition == query.disposition)
    if query.worker:
        conds.append(CallRecord.worker == query.worker)
    if query.direction:
        if query.direction not in DIRECTIONS:
            raise InvalidInput(f"direction must be one of {DIRECTIONS}")
        conds.append(CallRecord.direction == query.direction)
    if query.degraded:
        conds.append((CallRecord.asr_holds > 0) | (CallRecord.asr_dropped > 0))
    if query.folio:
        conds.append(CallRecord.case_id.in_(select(Case.id).where(Case.folio == query.folio)))
    if query.intent:
        conds.append(exists().where(CallTally.call_id == CallRecord.id, CallTally.kind == "intent",
                                    CallTally.key == query.intent))
    if query.text:
        pattern = "%" + query.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conds.append(exists().where(TranscriptTurn.call_id == CallRecord.id,
                                    func.lower(TranscriptTurn.text).like(pattern.lower(), escape="\\")))
    return q.where(and_(*conds)) if conds else q


def _details(s: Session, ids: Sequence[int]) -> list[CallDetail]:
    if not ids:
        return []
    rows = s.execute(select(CallRecord, Case.folio, Case.tramite_id)
                     .outerjoin(Case, Case.id == CallRecord.case_id).where(CallRecord.id.in_(ids))).all()
    intents: dict[int, list[str]] = {}
    for call_id, key in s.execute(select(CallTally.call_id, CallTally.key)
                                  .where(CallTally.call_id.in_(ids), CallTally.kind == "intent")
                                  .order_by(CallTally.id)):
        intents.setdefault(call_id, []).append(key)
    by_id = {c.id: (c, folio, tramite) for c, folio, tramite in rows}
    out = []
    for i in ids:
        c, folio, tramite = by_id[i]
        out.append(CallDetail(
            c.sip_call_id, c.started_at, c.answered_at, c.ended_at, c.duration_s, c.caller_masked, c.node,
            c.worker, c.disposition, folio, tramite, c.turns_count, c.speech_turns, c.dtmf_turns, c.no_match_count,
            c.no_input_count, c.barge_ins, c.latency_p50_ms, c.latency_max_ms, c.transfer_target,
            c.transfer_reason, tuple(intents.get(i, ())), c.direction, c.asr_holds, c.asr_dropped))
    return out
