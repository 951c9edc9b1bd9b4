"""The dashboard's pre-aggregation: per UTC hour of call start, node, kind and key, a count `n` and a sum `total`.

A closed call contributes (kinds): `disposition` (n calls, total duration s), `duration` (calls with a duration),
`transfer_reason`, its tallies (`intent`, `city`, `asked`, `no_match`, `no_input`), `tramite`, `latency` (bin of
its median turn latency), `confidence` (bin of each caller speech turn), `not_understood` (masked phrase). Every
write that can change a closed call's contribution (close, a late or replayed stats write, a case link, a late
turn) subtracts the call's old contribution and adds the new one in the same transaction (`track`), so the rollup
always equals a direct count; `backfill` builds it from the raw rows (migrations 0005 and 0009, the benchmark).

Direction (migration 0009): every closed call adds `direction` (key inbound|outbound, n calls, total duration s);
all the other kinds above are the **inbound** calls' only, so "llamadas recibidas", their duration, dispositions,
transfer reasons, trámites, intents, latency and confidence never include the node's own callback calls. `peak` is
the exception on purpose: it is the lines in use, which outbound calls take too (the dashboard says so).

`peak` (node "") is not additive: per hour, the most closed calls up at once (total = the instant, epoch s), computed
again for each hour a closing call spans, under a row lock so concurrent closes on PostgreSQL queue and each sees
the other's end. Calls still open are not in the rollup (the dashboard counts them from the raw table).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from case_bridge.models import CallRecord, CallRollup, CallTally, Case, RollupVersion, TranscriptTurn
from foundation.logs import scrub
from foundation.vocabulary import NO_MATCH_INTENTS

LATENCY_BIN_MS = 50
CONFIDENCE_BINS = 10
TRANSFERRED = ("transferred", "transfer_failed")
MAX_CALL_SPAN = timedelta(hours=24)     # a call's peak is tracked over at most this many hours (a stuck call)
HOUR = timedelta(hours=1)

Key = tuple[datetime, str, str, str]          # hour, node, kind, key
Contribution = dict[Key, list[float]]         # -> [n, total]


def hour_of(t: datetime) -> datetime:
    t = t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    return t.replace(minute=0, second=0, microsecond=0)


def _add(out: Contribution, key: Key, n: float, total: float = 0.0) -> None:
    cur = out.setdefault(key, [0.0, 0.0])
    cur[0] += n
    cur[1] += total


def contribution(call: Mapping[str, Any], tramite: str | None, tallies: Iterable[tuple[str, str, int]],
                 turns: Iterable[tuple[str, str | None, float | None]]) -> Contribution:
    """What one closed call adds to the rollup. `call` has the CallRecord columns; `turns` its caller turns as
    (text, intent, confidence)."""
    out: Contribution = {}
    if call["ended_at"] is None:
        return out
    h, node = hour_of(call["started_at"]), call["node"] or ""
    disp, dur = call["disposition"] or "in_progress", call["duration_s"]
    direction = call.get("direction") or "inbound"
    _add(out, (h, node, "direction", direction), 1, dur or 0.0)
    if direction != "inbound":
        return out              # a callback: its own kind only, never in the inbound figures
    _add(out, (h, node, "disposition", disp), 1, dur or 0.0)
    if dur is not None:
        _add(out, (h, node, "duration", ""), 1, dur)
    if disp in TRANSFERRED:
        _add(out, (h, node, "transfer_reason", call["transfer_reason"] or "sin motivo"), 1)
    for kind, key, n in tallies:
        _add(out, (h, node, kind, key), n)
    if tramite:
        _add(out, (h, node, "tramite", tramite), 1)
    if call["latency_p50_ms"] is not None:
        _add(out, (h, node, "latency", str(int(call["latency_p50_ms"]) // LATENCY_BIN_MS)), 1)
    for text, intent, confidence in turns:
        if confidence is not None:
            b = min(max(int(confidence * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)   # 1.0 is in the top bin
            _add(out, (h, node, "confidence", str(b)), 1)
        if intent in NO_MATCH_INTENTS:
            _add(out, (h, node, "not_understood", scrub(text or "")[:200]), 1)
    return out


_CALL_COLS = (CallRecord.id, CallRecord.started_at, CallRecord.ended_at, CallRecord.node, CallRecord.disposition,
              CallRecord.duration_s, CallRecord.transfer_reason, CallRecord.latency_p50_ms, CallRecord.direction,
              Case.tramite_id)


def contributions_of(conn: Connection, call_ids: list[int]) -> Contribution:
    """The summed contribution of these calls, read with three queries."""
    out: Contribution = {}
    if not call_ids:
        return out
    calls = conn.execute(select(*_CALL_COLS).outerjoin(Case, Case.id == CallRecord.case_id)
                         .where(CallRecord.id.in_(call_ids))).mappings().all()
    tallies: dict[int, list[tuple[str, str, int]]] = {}
    for cid, kind, key, n in conn.execute(select(CallTally.call_id, CallTally.kind, CallTally.key, CallTally.n)
                                          .where(CallTally.call_id.in_(call_ids))):
        tallies.setdefault(cid, []).append((kind, key, n))
    turns: dict[int, list[tuple[str, str | None, float | None]]] = {}
    for cid, text, intent, conf in conn.execute(
            select(TranscriptTurn.call_id, TranscriptTurn.text, TranscriptTurn.intent, TranscriptTurn.confidence)
            .where(TranscriptTurn.call_id.in_(call_ids), TranscriptTurn.speaker == "caller")):
        turns.setdefault(cid, []).append((text, intent, conf))
    for c in calls:
        one = contribution(dict(c), c["tramite_id"], tallies.get(c["id"], ()), turns.get(c["id"], ()))
        for rkey, (rn, rtotal) in one.items():
            _add(out, rkey, rn, rtotal)
    return out


def bump_versions(conn: Connection, hours: Iterable[datetime]) -> None:
    """Raise the version of these hours: a dashboard cached over any of them is stale (case_bridge.analytics).
    Sorted, like the rollup rows, so concurrent writers lock in one order."""
    rows = [{"hour": h, "version": 1} for h in sorted(set(hours))]
    if not rows:
        return
    ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(RollupVersion)
    conn.execute(ins.on_conflict_do_update(index_elements=["hour"],
                                           set_={"version": RollupVersion.version + 1}), rows)


def _upsert_deltas(conn: Connection, deltas: Contribution) -> None:
    rows: list[dict[str, Any]] = [{"hour": h, "node": node, "kind": kind, "key": key, "n": int(n), "total": total}
            for (h, node, kind, key), (n, total) in deltas.items() if n or total]
    if not rows:
        return
    ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(CallRollup)
    stmt = ins.on_conflict_do_update(
        index_elements=["hour", "node", "kind", "key"],
        set_={"n": CallRollup.n + ins.excluded.n, "total": CallRollup.total + ins.excluded.total})
    rows.sort(key=lambda r: (r["hour"], r["node"], r["kind"], r["key"]))     # one lock order for every writer
    conn.execute(stmt, rows)                                                 # one executemany
    bump_versions(conn, {r["hour"] for r in rows})
    if any(r["n"] < 0 for r in rows):                                        # an edit can empty a key
        conn.execute(delete(CallRollup).where(CallRollup.hour.in_(sorted({r["hour"] for r in rows})),
                                              CallRollup.n == 0, CallRollup.kind != "peak"))


def _hour_peaks(conn: Connection, hours: list[datetime]) -> dict[datetime, tuple[int, datetime]]:
    lo, hi = min(hours), max(hours) + HOUR
    rows = conn.execute(select(CallRecord.started_at, CallRecord.ended_at).where(
        CallRecord.started_at >= lo - MAX_CALL_SPAN, CallRecord.started_at < hi,
        CallRecord.ended_at.is_not(None), CallRecord.ended_at > lo)).all()
    events = [(_aware(s), 1) for s, _ in rows] + [(_aware(e), -1) for _, e in rows]
    return _peaks_exact(events, hours)


def _peaks_exact(events: list[tuple[datetime, int]], hours: Iterable[datetime]) -> dict[datetime, tuple[int, datetime]]:
    """Per hour: the most calls up at once inside it (a call carried in from the hour before counts from the
    hour's start) and the first instant it was reached."""
    wanted = set(hours)
    best: dict[datetime, tuple[int, datetime]] = {}
    up = 0
    last_hour: datetime | None = None
    for t, d in sorted(events, key=lambda e: (e[0], e[1])):
        h = hour_of(t)
        if h != last_hour and up > 0:                 # the level carried across hour starts with no event
            start = (last_hour + HOUR) if last_hour is not None else h
            k = start
            while k <= h and k - start < MAX_CALL_SPAN:
                if k in wanted and up > best.get(k, (0, k))[0]:
                    best[k] = (up, k)
                k += HOUR
        last_hour = h
        up += d
        if h in wanted and up > best.get(h, (0, t))[0]:
            best[h] = (up, t)
    return best


def _set_peaks(conn: Connection, values: dict[datetime, tuple[int, datetime]], hours: Iterable[datetime]) -> None:
    for h in hours:
        n, at = values.get(h, (0, h))
        conn.execute(update(CallRollup)
                     .where(CallRollup.hour == h, CallRollup.node == "", CallRollup.kind == "peak",
                            CallRollup.key == "")
                     .values(n=n, total=at.timestamp()))


def _span_hours(started: datetime, ended: datetime) -> list[datetime]:
    h, last = hour_of(started), hour_of(min(ended, started + MAX_CALL_SPAN))
    out = []
    while h <= last:
        out.append(h)
        h += HOUR
    return out


def _aware(t: Any) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@contextmanager
def track(s: Session, call: CallRecord) -> Iterator[None]:
    """Wrap a write to `call`: on exit the rollup gets the change of its contribution (and its hours' peaks when
    it closed or its times changed)."""
    conn = s.connection()
    s.flush()
    before = contributions_of(conn, [call.id]) if call.id is not None and call.ended_at is not None else {}
    span_before = (call.started_at, call.ended_at)
    yield
    if call.ended_at is None and not before:
        return                                  # an open call is not in the rollup yet
    s.flush()
    after = contributions_of(conn, [call.id]) if call.ended_at is not None else {}
    deltas: Contribution = dict(after)
    for key, (n, total) in before.items():
        _add(deltas, key, -n, -total)
    _upsert_deltas(conn, deltas)
    if call.ended_at is not None and (call.started_at, call.ended_at) != span_before:
        refresh_peaks(conn, _span_hours(call.started_at, call.ended_at))


def refresh_peaks(conn: Connection, hours: list[datetime]) -> None:
    if not hours:
        return
    ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(CallRollup)
    conn.execute(ins.on_conflict_do_nothing(index_elements=["hour", "node", "kind", "key"]),
                 [{"hour": h, "node": "", "kind": "peak", "key": "", "n": 0, "total": h.timestamp()} for h in hours])
    if conn.dialect.name == "postgresql":     # queue behind a concurrent close of an overlapping call
        conn.execute(select(CallRollup.id).where(CallRollup.kind == "peak", CallRollup.node == "",
                                                 CallRollup.hour.in_(hours)).order_by(CallRollup.hour)
                     .with_for_update())
    _set_peaks(conn, _hour_peaks(conn, hours), hours)
    bump_versions(conn, hours)


def _hour_sql(conn: Connection, col: Any) -> Any:
    """The UTC hour of a timestamp column, as the driver returns it (naive UTC; parsed by `_aware`)."""
    if conn.dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", col))
    return func.strftime("%Y-%m-%d %H:00:00", col)


def _inbound(directions: bool) -> ColumnElement[bool]:
    """The calls the inbound kinds count: with `directions=False` (a schema before migration 0009, which has no
    `direction` column: migration 0005, 0009's downgrade) every call, as the rollup was then."""
    return CallRecord.direction == "inbound" if directions else true()


def _grouped(conn: Connection, directions: bool = True) -> Iterator[tuple[Any, str, str, str, Any, Any]]:
    """Every kind but not_understood and peak, grouped in SQL: (hour, node, kind, key, n, total)."""
    pg = conn.dialect.name == "postgresql"
    closed = and_(CallRecord.ended_at.is_not(None), _inbound(directions))
    hour, node = _hour_sql(conn, CallRecord.started_at), CallRecord.node
    if directions:
        yield from conn.execute(
            select(hour, node, literal("direction"), CallRecord.direction, func.count(),
                   func.coalesce(func.sum(CallRecord.duration_s), 0.0))
            .where(CallRecord.ended_at.is_not(None)).group_by(hour, node, CallRecord.direction))

    def run(kind: Any, key: Any, n: Any, total: Any, *where: Any, join: Any = None, having: Any = None) -> Any:
        q = select(hour, node, kind, key, n, total).select_from(CallRecord)
        if join is not None:
            q = q.join(*join)
        q = q.where(closed, *where).group_by(hour, node, key)
        return conn.execute(q.having(having) if having is not None else q)

    zero = literal(0.0)
    yield from run(literal("disposition"), func.coalesce(CallRecord.disposition, "in_progress"), func.count(),
                   func.coalesce(func.sum(CallRecord.duration_s), 0.0))
    yield from run(literal("duration"), literal(""), func.count(), func.sum(CallRecord.duration_s),
                   CallRecord.duration_s.is_not(None))
    yield from run(literal("transfer_reason"), func.coalesce(CallRecord.transfer_reason, "sin motivo"), func.count(),
                   zero, CallRecord.disposition.in_(TRANSFERRED))
    for r in conn.execute(select(hour, node, CallTally.kind, CallTally.key, func.sum(CallTally.n), zero)
                          .select_from(CallRecord).join(CallTally, CallTally.call_id == CallRecord.id)
                          .where(closed).group_by(hour, node, CallTally.kind, CallTally.key)
                          .having(func.sum(CallTally.n) != 0)):
        yield tuple(r)  # type: ignore[misc]
    yield from run(literal("tramite"), Case.tramite_id, func.count(), zero, join=(Case, Case.id == CallRecord.case_id))
    lat = cast(CallRecord.latency_p50_ms // LATENCY_BIN_MS, String)
    yield from run(literal("latency"), lat, func.count(), zero, CallRecord.latency_p50_ms.is_not(None))
    scaled = TranscriptTurn.confidence * CONFIDENCE_BINS
    raw = cast(func.floor(scaled), Integer) if pg else cast(scaled, Integer)   # PG's cast rounds; SQLite's cuts
    b = case((raw >= CONFIDENCE_BINS, CONFIDENCE_BINS - 1), (raw < 0, 0), else_=raw)     # 1.0 is in the top bin
    yield from run(literal("confidence"), cast(b, String), func.count(), zero, TranscriptTurn.speaker == "caller",
                   TranscriptTurn.confidence.is_not(None),
                   join=(TranscriptTurn, TranscriptTurn.call_id == CallRecord.id))


def backfill(conn: Connection, *, versions: bool = True, directions: bool = True) -> int:
    """Rebuild the whole rollup from the raw rows (closed calls): GROUP BY in the database for every kind but the
    masked phrases (scrubbed here) and the peaks (one sweep over the calls' start/end); returns the calls counted.
    `versions=False` for migration 0005, which runs before `rollup_versions` exists (0007); `directions=False`
    where `call_records.direction` does not exist (0005, 0009's downgrade): every call counted as inbound, no
    `direction` kind."""
    emptied = {_aware(h) for (h,) in conn.execute(select(CallRollup.hour).distinct())}
    conn.execute(delete(CallRollup))
    total: Contribution = {}
    for h, node, kind, key, n, t in _grouped(conn, directions):
        _add(total, (_aware(h), node or "", str(kind), str(key)), int(n), float(t or 0.0))
    for started, node, text in conn.execute(
            select(CallRecord.started_at, CallRecord.node, TranscriptTurn.text).select_from(CallRecord)
            .join(TranscriptTurn, TranscriptTurn.call_id == CallRecord.id)
            .where(CallRecord.ended_at.is_not(None), _inbound(directions), TranscriptTurn.speaker == "caller",
                   TranscriptTurn.intent.in_(sorted(NO_MATCH_INTENTS)))):
        _add(total, (hour_of(_aware(started)), node or "", "not_understood", scrub(text or "")[:200]), 1)
    events: list[tuple[datetime, int]] = []
    hours: set[datetime] = set()
    counted = 0
    for s_at, e_at in conn.execute(select(CallRecord.started_at, CallRecord.ended_at)
                                   .where(CallRecord.ended_at.is_not(None))):
        s_at, e_at = _aware(s_at), _aware(e_at)
        events += [(s_at, 1), (e_at, -1)]
        hours.update(_span_hours(s_at, e_at))
        counted += 1
    peak = _peaks_exact(events, hours)
    rows_out = [{"hour": h, "node": node, "kind": kind, "key": key, "n": int(n), "total": t}
                for (h, node, kind, key), (n, t) in total.items() if n]
    rows_out += [{"hour": h, "node": "", "kind": "peak", "key": "", "n": n, "total": at.timestamp()}
                 for h, (n, at) in peak.items()]
    for i in range(0, len(rows_out), 5000):
        conn.execute(insert(CallRollup), rows_out[i:i + 5000])
    if versions:
        bump_versions(conn, emptied | {_aware(r["hour"]) for r in rows_out})
    return counted
