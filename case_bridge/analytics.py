"""The supervisor's dashboard figures for a period: aggregate SQL over the call-detail records, portable between
SQLite and PostgreSQL (window functions and GROUP BY only; days and hours are bucketed in Veracruz time).

Every query ranges on `call_records.started_at` (indexed), so a period's cost grows with the calls in it, not with
the history. Distributions (turn latency, ASR confidence) are grouped into fixed bins in SQL and their percentiles
read from the bins here, so no per-row data leaves the database.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, literal, select, union_all

from case_bridge.models import CallRecord, CallTally, Case, CaseStatusChange, Escalation, Interaction, TranscriptTurn
from case_bridge.unit_of_work import UnitOfWork
from case_bridge.views import LOCAL_TZ
from foundation.logs import scrub
from foundation.vocabulary import NO_MATCH_INTENTS

TOP_N = 10
LATENCY_BIN_MS = 50
CONFIDENCE_BINS = 10
MIN_ASKED_FOR_RATE = 1          # a step asked fewer times than this is not ranked (its rate means nothing yet)
TRANSFERRED = ("transferred", "transfer_failed")
OTHER_CHANNELS = ("web", "office", "call_center", "kiosk")


@dataclass(frozen=True, slots=True)
class StepLoss:
    step: str
    asked: int
    no_match: int
    no_input: int

    @property
    def lost_rate(self) -> float:
        return (self.no_match + self.no_input) / self.asked if self.asked else 0.0


@dataclass(frozen=True, slots=True)
class CrossChannel:
    phone_cases: int                              # cases opened or consulted by phone in the period
    continued: dict[str, int]                     # channel -> cases later continued there
    median_hours: dict[str, float]                # channel -> median time from the first call to that channel

    @property
    def continued_any(self) -> int:
        return sum(self.continued.values())


@dataclass(frozen=True, slots=True)
class Dashboard:
    since: datetime
    until: datetime
    calls: int
    ended: int
    dispositions: dict[str, int]
    per_day: list[tuple[str, int]]
    per_hour: list[tuple[int, int]]               # hour of day 0..23 (local), all days of the period
    peak_concurrent: int
    peak_at: datetime | None
    aht_s: float | None
    transfer_reasons: list[tuple[str, int]]
    top_intents: list[tuple[str, int]]
    top_tramites: list[tuple[str, int]]
    top_cities: list[tuple[str, int]]
    lost_steps: list[StepLoss]
    not_understood: list[tuple[str, int]]         # masked phrases
    cross_channel: CrossChannel
    latency_by_day: list[tuple[str, int, int]]    # day, p50, p95 of the calls' median turn latency (ms)
    confidence_bins: list[tuple[float, int]]      # lower bound of the bin, caller speech turns in it
    extra: dict[str, Any] = field(default_factory=dict)

    def rate(self, *dispositions: str) -> float:
        return sum(self.dispositions.get(d, 0) for d in dispositions) / self.ended if self.ended else 0.0

    @property
    def containment(self) -> float:
        """Resolved without an agent: completed calls over ended calls."""
        return self.rate("completed")

    @property
    def transfer_rate(self) -> float:
        return self.rate(*TRANSFERRED)

    @property
    def abandonment(self) -> float:
        return self.rate("abandoned")


@dataclass(frozen=True, slots=True)
class LiveCall:
    call_id: str
    caller: str
    node: str
    worker: str
    started_at: datetime
    folio: str | None


@dataclass(frozen=True, slots=True)
class LiveView:
    calls: list[LiveCall]
    per_worker: dict[str, int]
    queue_waiting: int
    longest_wait_s: float | None


class Analytics:
    """The analytics topic of `CaseService`."""

    uow: UnitOfWork

    def dashboard(self, since: datetime, until: datetime) -> Dashboard:
        with self.uow.reader() as conn:
            return _Queries(conn, since, until).dashboard()

    def live_calls(self, max_age_s: float = 3600.0, *, now: datetime | None = None) -> LiveView:
        """Calls without an end newer than `max_age_s` (older ones belong to a worker that died: `lost`)."""
        now = now or datetime.now(LOCAL_TZ)
        with self.uow.reader() as conn:
            rows = conn.execute(
                select(CallRecord.sip_call_id, CallRecord.caller_masked, CallRecord.node, CallRecord.worker,
                       CallRecord.started_at, Case.folio)
                .outerjoin(Case, Case.id == CallRecord.case_id)
                .where(CallRecord.ended_at.is_(None), CallRecord.started_at >= now - timedelta(seconds=max_age_s))
                .order_by(CallRecord.started_at)).all()
            queue = conn.execute(select(func.count(), func.min(Escalation.requested_at))
                                 .where(Escalation.taken_at.is_(None), Escalation.closed_at.is_(None),
                                        Escalation.requested_at >= now - timedelta(seconds=max_age_s))).one()
        calls = [LiveCall(r[0], r[1], r[2], r[3], _utc(r[4]), r[5]) for r in rows]
        per_worker: dict[str, int] = {}
        for c in calls:
            label = f"{c.node}/{c.worker}" if c.worker else c.node or "-"
            per_worker[label] = per_worker.get(label, 0) + 1
        oldest = _utc(queue[1]) if queue[1] is not None else None
        return LiveView(calls, per_worker, int(queue[0]),
                        (now - oldest).total_seconds() if oldest is not None else None)


def _utc(value: Any) -> datetime:
    """Core rows bypass UtcDateTime's result processing on some drivers: make the value aware UTC."""
    from datetime import UTC
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Queries:
    def __init__(self, conn: Connection, since: datetime, until: datetime) -> None:
        self.conn = conn
        self.since, self.until = since, until
        self.pg = conn.dialect.name == "postgresql"
        self.in_period = and_(CallRecord.started_at >= since, CallRecord.started_at < until)

    # -- time buckets in local time ---------------------------------------------------------------------------
    def _local(self, col: Any, fmt_pg: str, fmt_sqlite: str) -> ColumnElement[Any]:
        if self.pg:
            return func.to_char(func.timezone(str(LOCAL_TZ), col), fmt_pg)
        offset = LOCAL_TZ.utcoffset(self.since.replace(tzinfo=None)) or timedelta(0)
        return func.strftime(fmt_sqlite, col, f"{int(offset.total_seconds() // 60)} minutes")

    def dashboard(self) -> Dashboard:
        dispositions = self._dispositions()
        peak, peak_at = self._peak()
        return Dashboard(
            since=self.since, until=self.until, calls=sum(dispositions.values()),
            ended=sum(n for d, n in dispositions.items() if d != "in_progress"), dispositions=dispositions,
            per_day=self._per_day(), per_hour=self._per_hour(), peak_concurrent=peak, peak_at=peak_at,
            aht_s=self._aht(), transfer_reasons=self._transfer_reasons(), top_intents=self._tally("intent"),
            top_tramites=self._top_tramites(), top_cities=self._tally("city"), lost_steps=self._lost_steps(),
            not_understood=self._not_understood(), cross_channel=self._cross_channel(),
            latency_by_day=self._latency_by_day(), confidence_bins=self._confidence())

    def _dispositions(self) -> dict[str, int]:
        label = func.coalesce(CallRecord.disposition, "in_progress")
        rows = self.conn.execute(select(label, func.count()).where(self.in_period).group_by(label)).all()
        return {str(d): int(n) for d, n in rows}

    def _per_day(self) -> list[tuple[str, int]]:
        day = self._local(CallRecord.started_at, "YYYY-MM-DD", "%Y-%m-%d")
        rows = self.conn.execute(select(day, func.count()).where(self.in_period).group_by(day).order_by(day)).all()
        return [(str(d), int(n)) for d, n in rows]

    def _per_hour(self) -> list[tuple[int, int]]:
        hour = self._local(CallRecord.started_at, "HH24", "%H")
        counts = {int(h): int(n) for h, n in
                  self.conn.execute(select(hour, func.count()).where(self.in_period).group_by(hour)).all()}
        return [(h, counts.get(h, 0)) for h in range(24)]

    def _peak(self) -> tuple[int, datetime | None]:
        """Most calls up at once: +1 at each start, -1 at each end, running sum in time order (ends first)."""
        starts = select(CallRecord.started_at.label("t"), literal(1).label("d")).where(self.in_period)
        ends = select(CallRecord.ended_at.label("t"), literal(-1).label("d")).where(
            self.in_period, CallRecord.ended_at.is_not(None))
        ev = union_all(starts, ends).subquery()
        running = select(ev.c.t, func.sum(ev.c.d).over(order_by=(ev.c.t, ev.c.d)).label("up")).subquery()
        row = self.conn.execute(select(running.c.up, running.c.t).order_by(running.c.up.desc(), running.c.t)
                                .limit(1)).first()
        return (int(row[0]), _utc(row[1])) if row else (0, None)

    def _aht(self) -> float | None:
        value = self.conn.execute(select(func.avg(CallRecord.duration_s))
                                  .where(self.in_period, CallRecord.duration_s.is_not(None))).scalar()
        return float(value) if value is not None else None

    def _transfer_reasons(self) -> list[tuple[str, int]]:
        reason = func.coalesce(CallRecord.transfer_reason, "sin motivo")
        rows = self.conn.execute(select(reason, func.count())
                                 .where(self.in_period, CallRecord.disposition.in_(TRANSFERRED))
                                 .group_by(reason).order_by(func.count().desc())).all()
        return [(str(r), int(n)) for r, n in rows]

    def _tally(self, kind: str, limit: int = TOP_N) -> list[tuple[str, int]]:
        total = func.sum(CallTally.n)
        rows = self.conn.execute(
            select(CallTally.key, total).join(CallRecord, CallRecord.id == CallTally.call_id)
            .where(self.in_period, CallTally.kind == kind).group_by(CallTally.key)
            .order_by(total.desc(), CallTally.key).limit(limit)).all()
        return [(str(k), int(n)) for k, n in rows]

    def _top_tramites(self) -> list[tuple[str, int]]:
        n = func.count(CallRecord.id)
        rows = self.conn.execute(
            select(Case.tramite_id, n).join(Case, Case.id == CallRecord.case_id).where(self.in_period)
            .group_by(Case.tramite_id).order_by(n.desc(), Case.tramite_id).limit(TOP_N)).all()
        return [(str(t), int(c)) for t, c in rows]

    def _lost_steps(self) -> list[StepLoss]:
        def of(kind: str) -> ColumnElement[Any]:
            return func.sum(case((CallTally.kind == kind, CallTally.n), else_=0))

        rows = self.conn.execute(
            select(CallTally.key, of("asked"), of("no_match"), of("no_input"))
            .join(CallRecord, CallRecord.id == CallTally.call_id)
            .where(self.in_period, CallTally.kind.in_(("asked", "no_match", "no_input")))
            .group_by(CallTally.key)).all()
        steps = [StepLoss(str(k), int(a or 0), int(m or 0), int(i or 0)) for k, a, m, i in rows]
        steps = [s for s in steps if s.asked >= MIN_ASKED_FOR_RATE]
        steps.sort(key=lambda s: (-s.lost_rate, -s.asked, s.step))
        return steps[:TOP_N]

    def _not_understood(self) -> list[tuple[str, int]]:
        n = func.count()
        rows = self.conn.execute(
            select(TranscriptTurn.text, n).join(CallRecord, CallRecord.id == TranscriptTurn.call_id)
            .where(self.in_period, TranscriptTurn.speaker == "caller",
                   TranscriptTurn.intent.in_(sorted(NO_MATCH_INTENTS)))
            .group_by(TranscriptTurn.text).order_by(n.desc(), TranscriptTurn.text).limit(TOP_N)).all()
        return [(scrub(str(t)), int(c)) for t, c in rows]

    def _cross_channel(self) -> CrossChannel:
        """Cases with a phone contact in the period, and the first later contact on each other channel (an
        interaction, or a status change made there) with the time between."""
        first_phone = (select(Interaction.case_id, func.min(Interaction.started_at).label("first"))
                       .where(Interaction.channel == "phone").group_by(Interaction.case_id)
                       .having(and_(func.min(Interaction.started_at) >= self.since,
                                    func.min(Interaction.started_at) < self.until)).subquery())
        phone_cases = int(self.conn.execute(select(func.count()).select_from(first_phone)).scalar_one())
        # later contacts are joined on case_id (indexed) from the phone cases only, never scanned whole
        rows: list[Any] = []
        for model, at in ((Interaction, Interaction.started_at), (CaseStatusChange, CaseStatusChange.at)):
            rows += self.conn.execute(
                select(model.case_id, model.channel, first_phone.c.first, func.min(at))
                .join(first_phone, first_phone.c.case_id == model.case_id)
                .where(model.channel.in_(OTHER_CHANNELS), at > first_phone.c.first)
                .group_by(model.case_id, model.channel, first_phone.c.first)).all()
        firsts: dict[tuple[int, str], tuple[Any, Any]] = {}
        for case_id, channel, first, at in rows:   # per case and channel: the earlier of the two kinds
            key = (int(case_id), str(channel))
            if key not in firsts or _utc(at) < _utc(firsts[key][1]):
                firsts[key] = (first, at)
        rows = [(c, f, a) for (_, c), (f, a) in firsts.items()]
        gaps: dict[str, list[float]] = {}
        for channel, first, at in rows:
            gaps.setdefault(str(channel), []).append((_utc(at) - _utc(first)).total_seconds() / 3600)
        return CrossChannel(phone_cases, {c: len(g) for c, g in gaps.items()},
                            {c: round(median(g), 2) for c, g in gaps.items()})

    def _latency_by_day(self) -> list[tuple[str, int, int]]:
        day = self._local(CallRecord.started_at, "YYYY-MM-DD", "%Y-%m-%d")
        bin_ = (CallRecord.latency_p50_ms / LATENCY_BIN_MS)
        bin_ = func.floor(bin_) if self.pg else func.cast(bin_, CallRecord.latency_p50_ms.type)
        rows = self.conn.execute(select(day, bin_, func.count())
                                 .where(self.in_period, CallRecord.latency_p50_ms.is_not(None))
                                 .group_by(day, bin_)).all()
        per_day: dict[str, list[tuple[int, int]]] = {}
        for d, b, n in rows:
            per_day.setdefault(str(d), []).append((int(b), int(n)))
        return [(d, _percentile(bins, 0.50), _percentile(bins, 0.95)) for d, bins in sorted(per_day.items())]

    def _confidence(self) -> list[tuple[float, int]]:
        scaled = TranscriptTurn.confidence * CONFIDENCE_BINS
        bin_ = func.floor(scaled) if self.pg else func.cast(scaled, CallRecord.turns_count.type)
        rows = self.conn.execute(
            select(bin_, func.count()).join(CallRecord, CallRecord.id == TranscriptTurn.call_id)
            .where(self.in_period, TranscriptTurn.speaker == "caller", TranscriptTurn.confidence.is_not(None))
            .group_by(bin_)).all()
        counts: dict[int, int] = {}
        for b, n in rows:
            i = min(max(int(b), 0), CONFIDENCE_BINS - 1)      # confidence 1.0 falls in the top bin
            counts[i] = counts.get(i, 0) + int(n)
        return [(i / CONFIDENCE_BINS, counts.get(i, 0)) for i in range(CONFIDENCE_BINS)]


def _percentile(bins: Sequence[tuple[int, int]], q: float) -> int:
    """The upper edge (ms) of the bin holding the q-th quantile."""
    total = sum(n for _, n in bins)
    seen = 0
    for b, n in sorted(bins):
        seen += n
        if seen >= q * total:
            return (b + 1) * LATENCY_BIN_MS
    return 0
