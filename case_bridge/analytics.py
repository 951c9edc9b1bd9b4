"""The supervisor's dashboard figures for a period, read from the hourly rollup (case_bridge/rollup.py: kept in step
with every closed call in its own transaction), so a period's cost grows with its hours, not with its calls; only
the in-progress count and the cross-channel figure read raw rows (through their indexes). Periods are read in
whole UTC hours; days and hours are bucketed in Veracruz time (whole hours from UTC). Distributions (turn latency,
ASR confidence) are fixed bins; their percentiles are read from the bins here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, exists, func, select, union_all
from sqlalchemy.orm import aliased

from case_bridge.models import CallRecord, CallRollup, Case, CaseStatusChange, Escalation, Interaction
from case_bridge.rollup import CONFIDENCE_BINS, LATENCY_BIN_MS, TRANSFERRED, hour_of
from case_bridge.unit_of_work import UnitOfWork
from case_bridge.views import LOCAL_TZ

TOP_N = 10
MIN_ASKED_FOR_RATE = 1          # a step asked fewer times than this is not ranked (its rate means nothing yet)
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
        # the rollup is per hour: a period is read in whole UTC hours (local days are whole hours too)
        self.h0 = hour_of(since)
        self.h1 = hour_of(until) + (timedelta(hours=1) if hour_of(until) != until else timedelta(0))
        self.pg = conn.dialect.name == "postgresql"

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
            aht_s=self._aht(), transfer_reasons=self._top("transfer_reason", None), top_intents=self._top("intent"),
            top_tramites=self._top("tramite"), top_cities=self._top("city"), lost_steps=self._lost_steps(),
            not_understood=self._top("not_understood"), cross_channel=self._cross_channel(),
            latency_by_day=self._latency_by_day(), confidence_bins=self._confidence())

    # -- over the rollup (case_bridge/rollup.py): one row per hour, node, kind and key ------------------------
    def _kind(self, *kinds: str) -> ColumnElement[bool]:
        return and_(CallRollup.kind.in_(kinds), CallRollup.hour >= self.h0, CallRollup.hour < self.h1)

    def _dispositions(self) -> dict[str, int]:
        n = func.sum(CallRollup.n)
        out = {str(d): int(c) for d, c in self.conn.execute(
            select(CallRollup.key, n).where(self._kind("disposition")).group_by(CallRollup.key)).all() if c}
        open_calls = int(self.conn.execute(select(func.count()).select_from(CallRecord).where(
            CallRecord.ended_at.is_(None), CallRecord.started_at >= self.h0,
            CallRecord.started_at < self.h1)).scalar_one())
        if open_calls:
            out["in_progress"] = open_calls
        return out

    def _per_day(self) -> list[tuple[str, int]]:
        day = self._local(CallRollup.hour, "YYYY-MM-DD", "%Y-%m-%d")
        rows = self.conn.execute(select(day, func.sum(CallRollup.n)).where(self._kind("disposition"))
                                 .group_by(day).order_by(day)).all()
        return [(str(d), int(n)) for d, n in rows if n]

    def _per_hour(self) -> list[tuple[int, int]]:
        hour = self._local(CallRollup.hour, "HH24", "%H")
        counts = {int(h): int(n) for h, n in self.conn.execute(
            select(hour, func.sum(CallRollup.n)).where(self._kind("disposition")).group_by(hour)).all()}
        return [(h, counts.get(h, 0)) for h in range(24)]

    def _peak(self) -> tuple[int, datetime | None]:
        """Most closed calls up at once in any hour of the period (a call carried in from before counts)."""
        row = self.conn.execute(select(CallRollup.n, CallRollup.total).where(self._kind("peak"), CallRollup.n > 0)
                                .order_by(CallRollup.n.desc(), CallRollup.total).limit(1)).first()
        return (int(row[0]), datetime.fromtimestamp(float(row[1]), UTC)) if row else (0, None)

    def _aht(self) -> float | None:
        n, total = self.conn.execute(select(func.sum(CallRollup.n), func.sum(CallRollup.total))
                                     .where(self._kind("duration"))).one()
        return float(total) / int(n) if n else None

    def _top(self, kind: str, limit: int | None = TOP_N) -> list[tuple[str, int]]:
        total = func.sum(CallRollup.n)
        q = (select(CallRollup.key, total).where(self._kind(kind)).group_by(CallRollup.key)
             .order_by(total.desc(), CallRollup.key))
        return [(str(k), int(n)) for k, n in self.conn.execute(q.limit(limit) if limit else q).all() if n]

    def _lost_steps(self) -> list[StepLoss]:
        def of(kind: str) -> ColumnElement[Any]:
            return func.sum(case((CallRollup.kind == kind, CallRollup.n), else_=0))

        rows = self.conn.execute(
            select(CallRollup.key, of("asked"), of("no_match"), of("no_input"))
            .where(self._kind("asked", "no_match", "no_input")).group_by(CallRollup.key)).all()
        steps = [StepLoss(str(k), int(a or 0), int(m or 0), int(i or 0)) for k, a, m, i in rows]
        steps = [s for s in steps if s.asked >= MIN_ASKED_FOR_RATE]
        steps.sort(key=lambda s: (-s.lost_rate, -s.asked, s.step))
        return steps[:TOP_N]

    def _cross_channel(self) -> CrossChannel:
        """Cases with a phone contact in the period, and the first later contact on each other channel (an
        interaction, or a status change made there) with the time between."""
        # first phone contact in the period = a phone contact in the period and none before it: both ranges
        # read through ix_interactions_channel_started / _channel_case_started, never the whole history
        earlier = aliased(Interaction)
        first_phone = (select(Interaction.case_id, func.min(Interaction.started_at).label("first"))
                       .where(Interaction.channel == "phone", Interaction.started_at >= self.since,
                              Interaction.started_at < self.until,
                              ~exists().where(earlier.channel == "phone", earlier.case_id == Interaction.case_id,
                                              earlier.started_at < self.since))
                       .group_by(Interaction.case_id).cte("first_phone").prefix_with("MATERIALIZED"))
        phone_cases = int(self.conn.execute(select(func.count()).select_from(first_phone)).scalar_one())
        # later contacts (interactions and status changes, in one statement over the CTE computed once) are
        # joined on case_id (indexed) from the phone cases only, never scanned whole
        later = union_all(*(
            select(model.case_id, model.channel, first_phone.c.first, at.label("at"))
            .join(first_phone, first_phone.c.case_id == model.case_id)
            .where(model.channel.in_(OTHER_CHANNELS), at > first_phone.c.first)
            for model, at in ((Interaction, Interaction.started_at), (CaseStatusChange, CaseStatusChange.at)))
        ).subquery()
        rows: list[Any] = list(self.conn.execute(
            select(later.c.case_id, later.c.channel, later.c.first, func.min(later.c.at))
            .group_by(later.c.case_id, later.c.channel, later.c.first)).all())
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
        day = self._local(CallRollup.hour, "YYYY-MM-DD", "%Y-%m-%d")
        rows = self.conn.execute(select(day, CallRollup.key, func.sum(CallRollup.n))
                                 .where(self._kind("latency")).group_by(day, CallRollup.key)).all()
        per_day: dict[str, list[tuple[int, int]]] = {}
        for d, b, n in rows:
            per_day.setdefault(str(d), []).append((int(b), int(n)))
        return [(d, _percentile(bins, 0.50), _percentile(bins, 0.95)) for d, bins in sorted(per_day.items())]

    def _confidence(self) -> list[tuple[float, int]]:
        counts = {int(b): int(n) for b, n in self._top("confidence", None)}
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
