"""The supervisor's dashboard figures for a period, read from the hourly rollup (case_bridge/rollup.py: kept in step
with every closed call in its own transaction) and the per-case journeys (case_bridge/journeys.py: the
cross-channel figure), so a period's cost grows with its hours, not with its calls; only the in-progress count
reads raw rows (partial index). The settled hours of a period are cached per process (`DashboardCache`), checked
against per-hour versions on every request (docs/operations.md). Periods are read in
whole UTC hours; days and hours are bucketed in Veracruz time (whole hours from UTC). Distributions (turn latency,
ASR confidence) are fixed bins; their percentiles are read from the bins here.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, select

from case_bridge.journeys import OTHER_CHANNELS
from case_bridge.models import (
    CallbackAttempt,
    CallRecord,
    CallRollup,
    Case,
    CaseJourney,
    Escalation,
    RollupVersion,
)
from case_bridge.rollup import CONFIDENCE_BINS, LATENCY_BIN_MS, TRANSFERRED, hour_of
from case_bridge.unit_of_work import UnitOfWork
from case_bridge.views import LOCAL_TZ

TOP_N = 10
MIN_ASKED_FOR_RATE = 1          # a step asked fewer times than this is not ranked (its rate means nothing yet)


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
class Outbound:
    """The calls the node placed in the period (callbacks, `call_records.direction` outbound): their own section,
    never part of the inbound figures. `calls` are the answered ones that became a call record (closed and in
    progress); `outcomes` count every dialled attempt by how it ended (case_bridge.callbacks.OUTCOMES), from
    `callback_attempts`, so a busy or unanswered attempt (no call record) is there too."""
    calls: int = 0
    in_progress: int = 0
    duration_s: float = 0.0                       # sum over the closed ones (a lost call without a duration: 0)
    closed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())

    @property
    def aht_s(self) -> float | None:
        return self.duration_s / self.closed if self.closed else None


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A period's figures. Inbound only (calls the citizens placed): calls, ended, dispositions, per day/hour,
    AHT, transfer reasons, intents, trámites, cities, lost steps, phrases, latency, confidence, and the
    cross-channel figure (a callback is not a citizen's phone contact). `peak_concurrent` counts both directions
    (lines in use). The node's own calls are in `outbound`."""
    since: datetime
    until: datetime
    calls: int                                    # inbound: closed + in progress
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
    outbound: Outbound = field(default_factory=Outbound)
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


class DashboardCache:
    """The settled part (the hours before the current one) of the last few periods this process computed, each
    with the version token of those hours (see `_Queries.token`): a page reload, a second supervisor or the
    printable report reads the same period again without recomputing it, and any write that changes a figure of
    those hours (a late record, a case continued on another channel) changes the token first, so a stale entry is
    never served. The current hour and the in-progress count are read on every request; when the hour turns the
    key changes and the settled part is computed once more."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._items: OrderedDict[tuple[datetime, ...], tuple[tuple[int, int], _Partial]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[datetime, ...], token: tuple[int, int]) -> _Partial | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != token:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: tuple[datetime, ...], token: tuple[int, int], value: _Partial) -> None:
        with self._lock:
            self._items[key] = (token, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Analytics:
    """The analytics topic of `CaseService`."""

    uow: UnitOfWork
    dashboard_cache: DashboardCache

    def dashboard(self, since: datetime, until: datetime, *, now: datetime | None = None) -> Dashboard:
        """The period's figures: its settled hours (before the current one) from the cache while their versions
        are unchanged, the current hour and the calls in progress read every time."""
        with self.uow.reader() as conn:
            q = _Queries(conn, since, until, now=now)
            key = (q.h0, q.hc, since, until)
            token = q.token()                   # read before the figures: a write after it shows next time
            settled = self.dashboard_cache.get(key, token)
            if settled is None:
                settled = q.settled()
                self.dashboard_cache.put(key, token, settled)
            return q.with_attempts(q.with_open_calls(settled.merge(q.current()).dashboard(since, until)))

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


@dataclass(slots=True)
class _Partial:
    """The figures of some whole hours in a mergeable form (counts, sums, full key counters, gap lists): a
    period's settled hours (cached) and its current hour (always read) are merged into one `Dashboard`."""

    disp: Counter[str] = field(default_factory=Counter)
    per_day: Counter[str] = field(default_factory=Counter)
    per_hour: Counter[int] = field(default_factory=Counter)
    peak: tuple[int, float] | None = None                  # most up at once, the instant (epoch s)
    duration: tuple[int, float] = (0, 0.0)                 # calls with a duration, their sum
    keys: dict[str, Counter[str]] = field(default_factory=dict)   # kind -> key -> n (tops, steps, bins)
    latency: dict[str, Counter[int]] = field(default_factory=dict)  # local day -> 50 ms bin -> calls
    phone_cases: int = 0
    gaps: dict[str, list[float]] = field(default_factory=dict)    # channel -> hours from the first call
    directions: dict[str, tuple[int, float]] = field(default_factory=dict)   # direction -> closed calls, duration

    def merge(self, other: _Partial) -> _Partial:
        keys = {k: Counter(v) for k, v in self.keys.items()}
        for k, v in other.keys.items():
            keys.setdefault(k, Counter()).update(v)
        latency: dict[str, Counter[int]] = {d: Counter(b) for d, b in self.latency.items()}
        for d, b in other.latency.items():
            latency.setdefault(d, Counter()).update(b)
        peaks = [p for p in (self.peak, other.peak) if p is not None]
        gaps = {c: list(g) for c, g in self.gaps.items()}
        for c, g in other.gaps.items():
            gaps.setdefault(c, []).extend(g)
        directions = dict(self.directions)
        for d, (n, t) in other.directions.items():
            n0, t0 = directions.get(d, (0, 0.0))
            directions[d] = (n0 + n, t0 + t)
        return _Partial(self.disp + other.disp, self.per_day + other.per_day, self.per_hour + other.per_hour,
                        min(peaks, key=lambda p: (-p[0], p[1])) if peaks else None,
                        (self.duration[0] + other.duration[0], self.duration[1] + other.duration[1]),
                        keys, latency, self.phone_cases + other.phone_cases, gaps, directions)

    def dashboard(self, since: datetime, until: datetime) -> Dashboard:
        dispositions = {k: n for k, n in self.disp.items() if n}

        def top(kind: str, limit: int | None = TOP_N) -> list[tuple[str, int]]:
            items = sorted(((k, n) for k, n in self.keys.get(kind, Counter()).items() if n),
                           key=lambda kv: (-kv[1], kv[0]))
            return items[:limit] if limit else items

        steps = [StepLoss(k, a, self.keys.get("no_match", Counter())[k], self.keys.get("no_input", Counter())[k])
                 for k, a in self.keys.get("asked", Counter()).items()]
        steps = [st for st in steps if st.asked >= MIN_ASKED_FOR_RATE]
        steps.sort(key=lambda st: (-st.lost_rate, -st.asked, st.step))
        conf = self.keys.get("confidence", Counter())
        n_dur, total_dur = self.duration
        out_n, out_dur = self.directions.get("outbound", (0, 0.0))
        return Dashboard(
            since=since, until=until, calls=sum(dispositions.values()),
            ended=sum(n for d, n in dispositions.items() if d != "in_progress"), dispositions=dispositions,
            per_day=sorted((d, n) for d, n in self.per_day.items() if n),
            per_hour=[(h, self.per_hour.get(h, 0)) for h in range(24)],
            peak_concurrent=self.peak[0] if self.peak else 0,
            peak_at=datetime.fromtimestamp(self.peak[1], UTC) if self.peak else None,
            aht_s=total_dur / n_dur if n_dur else None, transfer_reasons=top("transfer_reason", None),
            top_intents=top("intent"), top_tramites=top("tramite"), top_cities=top("city"),
            lost_steps=steps[:TOP_N], not_understood=top("not_understood"),
            cross_channel=CrossChannel(self.phone_cases, {c: len(g) for c, g in self.gaps.items()},
                                       {c: round(median(g), 2) for c, g in self.gaps.items()}),
            latency_by_day=[(d, _percentile(list(b.items()), 0.50), _percentile(list(b.items()), 0.95))
                            for d, b in sorted(self.latency.items())],
            confidence_bins=[(i / CONFIDENCE_BINS, conf.get(str(i), 0)) for i in range(CONFIDENCE_BINS)],
            outbound=Outbound(calls=out_n, duration_s=out_dur, closed=out_n))


FEW_HOURS = timedelta(hours=48)
KEYED_KINDS = ("transfer_reason", "intent", "tramite", "city", "not_understood", "asked", "no_match", "no_input",
               "confidence")


class _Queries:
    """A period's figures: rollup hours [h0, h1) and first phone contacts in [since, until)."""

    def __init__(self, conn: Connection, since: datetime, until: datetime, *, now: datetime | None = None) -> None:
        self.conn = conn
        self.since, self.until = since, until
        # the rollup is per hour: a period is read in whole UTC hours (local days are whole hours too)
        self.h0 = hour_of(since)
        self.h1 = hour_of(until) + (timedelta(hours=1) if hour_of(until) != until else timedelta(0))
        # hours before the current one are settled (cached); the current hour and later are read every time
        self.hc = min(max(hour_of(now or datetime.now(UTC)), self.h0), self.h1)
        self.pg = conn.dialect.name == "postgresql"
        # SQLite buckets local days with one UTC offset for the whole period, taken at its start
        self.offset = LOCAL_TZ.utcoffset(since.replace(tzinfo=None)) or timedelta(0)

    # -- time buckets in local time ---------------------------------------------------------------------------
    def _local(self, col: Any, fmt_pg: str, fmt_sqlite: str) -> ColumnElement[Any]:
        if self.pg:
            return func.to_char(func.timezone(str(LOCAL_TZ), col), fmt_pg)
        return func.strftime(fmt_sqlite, col, f"{int(self.offset.total_seconds() // 60)} minutes")

    def _to_local(self, hour: Any) -> datetime:
        """A rollup hour in local time as each backend's SQL bucketing has it (PostgreSQL: the zone's rules;
        SQLite: the period's one offset)."""
        h = _utc(hour)
        return h.astimezone(LOCAL_TZ) if self.pg else (h + self.offset).replace(tzinfo=None)

    def token(self) -> tuple[int, int]:
        """How many settled hours of the period have a version and the sum of their versions: every write that
        changes a figure of an hour raises its version (case_bridge.rollup.bump_versions), so the sum only grows."""
        n, total = self.conn.execute(select(func.count(), func.coalesce(func.sum(RollupVersion.version), 0))
                                     .where(RollupVersion.hour >= self.h0, RollupVersion.hour < self.hc)).one()
        return int(n), int(total)

    def settled(self) -> _Partial:
        return self.partial(self.h0, self.hc, self.since, min(self.until, self.hc))

    def current(self) -> _Partial:
        return self.partial(self.hc, self.h1, max(self.since, self.hc), self.until)

    def with_open_calls(self, d: Dashboard) -> Dashboard:
        """The closed calls' figures plus the calls of the period still in progress (raw rows, partial index):
        inbound ones as the `in_progress` disposition, outbound ones in their own section."""
        open_calls = dict(self.conn.execute(select(CallRecord.direction, func.count()).where(
            CallRecord.ended_at.is_(None), CallRecord.started_at >= self.h0,
            CallRecord.started_at < self.h1).group_by(CallRecord.direction)).all())
        inbound, outbound = int(open_calls.get("inbound", 0)), int(open_calls.get("outbound", 0))
        if outbound:
            d = replace(d, outbound=replace(d.outbound, calls=d.outbound.calls + outbound, in_progress=outbound))
        if not inbound:
            return d
        dispositions = {**d.dispositions, "in_progress": inbound}
        return replace(d, calls=sum(dispositions.values()), dispositions=dispositions)

    def with_attempts(self, d: Dashboard) -> Dashboard:
        """The period's callback attempts by outcome. Not in the rollup (a busy or unanswered attempt has no call
        record) and so not covered by its versions: read on every request, never cached (an index range over the
        period's attempts, a few rows per day)."""
        rows = self.conn.execute(select(CallbackAttempt.outcome, func.count()).where(
            CallbackAttempt.at >= self.since, CallbackAttempt.at < self.until).group_by(CallbackAttempt.outcome))
        outcomes = {str(o): int(n) for o, n in rows if n}
        return replace(d, outbound=replace(d.outbound, outcomes=outcomes)) if outcomes else d

    def dashboard(self) -> Dashboard:
        """Every figure of the period from the pre-aggregates (closed calls only: see `with_open_calls`)."""
        return self.settled().merge(self.current()).dashboard(self.since, self.until)

    # -- over the rollup (case_bridge/rollup.py): one row per hour, node, kind and key ------------------------
    def partial(self, h0: datetime, h1: datetime, since: datetime, until: datetime) -> _Partial:
        out = _Partial()
        if h0 < h1:
            self._rollup(out, h0, h1)
        if since < until:
            self._cross_channel(out, since, until)
        return out

    def _rollup(self, out: _Partial, h0: datetime, h1: datetime) -> None:
        def kind(*kinds: str) -> ColumnElement[bool]:
            return and_(CallRollup.kind.in_(kinds), CallRollup.hour >= h0, CallRollup.hour < h1)

        n = func.sum(CallRollup.n)
        day = self._local(CallRollup.hour, "YYYY-MM-DD", "%Y-%m-%d")
        local: dict[Any, tuple[str, int]] = {}
        # per UTC hour and key, bucketed here: cheaper than two local-time expressions per row in SQL
        for h, k, c in self.conn.execute(select(CallRollup.hour, CallRollup.key, n).where(kind("disposition"))
                                         .group_by(CallRollup.hour, CallRollup.key)):
            bucket = local.get(h)
            if bucket is None:
                at = self._to_local(h)
                bucket = local[h] = (at.strftime("%Y-%m-%d"), at.hour)
            out.disp[str(k)] += int(c)
            out.per_day[bucket[0]] += int(c)
            out.per_hour[bucket[1]] += int(c)
        row = self.conn.execute(select(CallRollup.n, CallRollup.total).where(kind("peak"), CallRollup.n > 0)
                                .order_by(CallRollup.n.desc(), CallRollup.total).limit(1)).first()
        out.peak = (int(row[0]), float(row[1])) if row else None
        dn, dt = self.conn.execute(select(func.sum(CallRollup.n), func.sum(CallRollup.total))
                                   .where(kind("duration"))).one()
        out.duration = (int(dn or 0), float(dt or 0.0))
        out.directions = {str(d): (int(c), float(t or 0.0)) for d, c, t in self.conn.execute(
            select(CallRollup.key, n, func.sum(CallRollup.total)).where(kind("direction"))
            .group_by(CallRollup.key)) if c}
        # over many hours one statement per kind (SQLite groups an IN list of every kind ~3x slower); over a
        # few (the current hour) one statement for all, saving the round trips
        groups = [(k_,) for k_ in KEYED_KINDS] if h1 - h0 > FEW_HOURS else [KEYED_KINDS]
        for kinds in groups:
            for k_, key, c in self.conn.execute(select(CallRollup.kind, CallRollup.key, n).where(kind(*kinds))
                                                .group_by(CallRollup.kind, CallRollup.key)):
                out.keys.setdefault(str(k_), Counter())[str(key)] += int(c)
        for d, b, c in self.conn.execute(select(day, CallRollup.key, n).where(kind("latency"))
                                         .group_by(day, CallRollup.key)):
            out.latency.setdefault(str(d), Counter())[int(b)] += int(c)

    def _cross_channel(self, out: _Partial, since: datetime, until: datetime) -> None:
        """Cases whose first phone contact ever is in [since, until), and per other channel the first later
        contact there (an interaction, or a status change made there) with the time between: read from the
        per-case journeys (case_bridge/journeys.py) through their covering index."""
        in_period = and_(CaseJourney.first_phone_at >= since, CaseJourney.first_phone_at < until)
        out.phone_cases = int(self.conn.execute(select(func.count()).select_from(CaseJourney).where(
            CaseJourney.channel == "phone", in_period)).scalar_one())
        for channel, gap_s in self.conn.execute(select(CaseJourney.channel, CaseJourney.gap_s).where(
                CaseJourney.channel.in_(OTHER_CHANNELS), in_period)):
            out.gaps.setdefault(str(channel), []).append(float(gap_s) / 3600)


def _percentile(bins: Sequence[tuple[int, int]], q: float) -> int:
    """The upper edge (ms) of the bin holding the q-th quantile."""
    total = sum(n for _, n in bins)
    seen = 0
    for b, n in sorted(bins):
        seen += n
        if seen >= q * total:
            return (b + 1) * LATENCY_BIN_MS
    return 0
