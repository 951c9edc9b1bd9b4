"""Callback jobs (case_bridge/callbacks.py) on SQLite and PostgreSQL: dial plan, leases with two schedulers at
once, the retry schedule under a test clock (spacing, attempts, quiet hours), opt-out honoured everywhere."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from case_bridge.callbacks import next_attempt, outside_quiet_hours
from case_bridge.errors import InvalidInput
from case_bridge.service import CaseService
from foundation import dialplan
from foundation.config import CallbackConfig

PREFIXES = ["52228", "228"]
SCHEDULE = CallbackConfig(attempts=3, spacing_s=[600, 3600], quiet_start="21:00", quiet_end="08:00",
                          timezone="America/Mexico_City", lease_s=60)
# 10:00 in Xalapa (UTC-6): outside quiet hours.
T0 = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


def new_case(svc: CaseService) -> str:
    return svc.open_case("licencia_conducir", "phone").case.folio


def test_dial_plan() -> None:
    assert dialplan.check("+52 (228) 123-4567", PREFIXES).number == "522281234567"
    assert dialplan.check("228 123 4567", PREFIXES).ok
    assert dialplan.check("55 1234 5678", PREFIXES).reason == "not_allowed"   # outside the dial plan
    assert dialplan.check("12345", PREFIXES).reason == "too_short"
    assert dialplan.check("228-ABC-4567", PREFIXES).reason == "not_a_number"
    assert dialplan.check("2281234567", []).reason == "not_allowed"          # empty plan: nothing is dialled
    assert dialplan.mask("2281234567") == "***67"


def test_quiet_hours_in_local_time() -> None:
    at_2230_local = datetime(2026, 12, 2, 4, 30, tzinfo=UTC)          # 22:30 on Dec 1 in Xalapa
    assert outside_quiet_hours(at_2230_local, SCHEDULE) == datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # 08:00
    at_0700_local = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
    assert outside_quiet_hours(at_0700_local, SCHEDULE) == datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    assert outside_quiet_hours(T0, SCHEDULE) == T0
    assert next_attempt(1, T0, SCHEDULE) == T0 + timedelta(seconds=600)
    assert next_attempt(5, T0, SCHEDULE) == T0 + timedelta(seconds=3600)        # the last spacing repeats
    late = datetime(2026, 12, 3, 2, 30, tzinfo=UTC)                              # 20:30 local + 1 h -> quiet
    assert next_attempt(2, late, SCHEDULE) == datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


def test_invalid_and_foreign_numbers_are_recorded_not_dialled(svc: CaseService) -> None:
    bad = svc.request_callback(new_case(svc), "12-34", allowed_prefixes=PREFIXES, now=T0)
    foreign = svc.request_callback(new_case(svc), "+1 202 555 0143", allowed_prefixes=PREFIXES, now=T0)
    assert (bad.state, bad.detail) == ("invalid", "number refused: too_short")
    assert (foreign.state, foreign.detail) == ("invalid", "number refused: not_allowed")
    leased = svc.lease_due("n-invalid", now=T0 + timedelta(days=1), lease_s=60, limit=100)
    assert not {bad.id, foreign.id} & {v.id for v in leased}


def test_retry_schedule_busy_no_answer_then_failed(svc: CaseService) -> None:
    folio = new_case(svc)
    job = svc.request_callback(folio, "2281230001", allowed_prefixes=PREFIXES, now=T0, schedule=SCHEDULE)
    assert job.state == "pending"
    [leased] = [j for j in svc.lease_due("n1", now=T0, lease_s=60, limit=50) if j.id == job.id]
    after = svc.record_attempt(leased.id, "n1", "busy", now=T0, schedule=SCHEDULE)
    assert (after.state, after.attempts, after.next_attempt_at) == ("pending", 1, T0 + timedelta(seconds=600))
    # Not due before its time (test clock), due after.
    assert job.id not in [j.id for j in svc.lease_due("n1", now=T0 + timedelta(seconds=599), lease_s=60, limit=50)]
    t1 = T0 + timedelta(seconds=600)
    assert job.id in [j.id for j in svc.lease_due("n1", now=t1, lease_s=60, limit=50)]
    after = svc.record_attempt(job.id, "n1", "no_answer", now=t1, schedule=SCHEDULE)
    assert (after.attempts, after.next_attempt_at) == (2, t1 + timedelta(seconds=3600))
    t2 = t1 + timedelta(seconds=3600)
    assert job.id in [j.id for j in svc.lease_due("n1", now=t2, lease_s=60, limit=50)]
    after = svc.record_attempt(job.id, "n1", "silent", now=t2, schedule=SCHEDULE)
    assert (after.state, after.attempts) == ("failed", 3)
    assert [c.state for c in svc.callbacks_for(folio)] == ["failed"]


def test_expired_lease_is_due_again_and_the_old_owner_cannot_record(svc: CaseService) -> None:
    folio = new_case(svc)
    job = svc.request_callback(folio, "2281230002", allowed_prefixes=PREFIXES, now=T0)
    assert job.id in [j.id for j in svc.lease_due("dead-node", now=T0, lease_s=60, limit=50)]
    assert job.id not in [j.id for j in svc.lease_due("n2", now=T0 + timedelta(seconds=30), lease_s=60, limit=50)]
    assert job.id in [j.id for j in svc.lease_due("n2", now=T0 + timedelta(seconds=61), lease_s=60, limit=50)]
    with pytest.raises(Exception, match="not leased by dead-node"):
        svc.record_attempt(job.id, "dead-node", "answered", now=T0, schedule=SCHEDULE)
    assert svc.record_attempt(job.id, "n2", "answered", now=T0, schedule=SCHEDULE).state == "done"


def test_opt_out_is_honoured_everywhere(svc: CaseService) -> None:
    number = "2281230003"
    first, second = new_case(svc), new_case(svc)
    job = svc.request_callback(first, number, allowed_prefixes=PREFIXES, now=T0)
    other = svc.request_callback(second, number, allowed_prefixes=PREFIXES, now=T0)
    leased = [j for j in svc.lease_due("n1", now=T0, lease_s=60, limit=50) if j.id == job.id]
    assert leased
    assert svc.record_attempt(job.id, "n1", "opt_out", now=T0, schedule=SCHEDULE).state == "opted_out"
    # The other pending job of that number is stopped too (if it was not leased in the same batch) ...
    states = {v.id: v.state for v in svc.callbacks_for(second)}
    assert states[other.id] in ("opted_out", "active")
    # ... and a new request for the number (any channel) is recorded and never dialled.
    third = svc.request_callback(new_case(svc), "228 123 0003", allowed_prefixes=PREFIXES, now=T0)
    assert third.state == "opted_out"
    assert svc.opt_out("228 123 0003", channel="web") == 0


def test_two_schedulers_at_once_never_take_the_same_job(svc: CaseService) -> None:
    ids = {svc.request_callback(new_case(svc), f"22812{n:05d}", allowed_prefixes=PREFIXES, now=T0).id
           for n in range(20)}
    taken: Counter[int] = Counter()
    owners: dict[int, str] = {}
    barrier = threading.Barrier(2)
    lock = threading.Lock()

    def scheduler(name: str) -> None:
        barrier.wait()
        for _ in range(30):
            for view in svc.lease_due(name, now=T0 + timedelta(seconds=1), lease_s=600, limit=2):
                with lock:
                    taken[view.id] += 1
                    owners[view.id] = name

    threads = [threading.Thread(target=scheduler, args=(f"node-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    mine = {i: c for i, c in taken.items() if i in ids}
    assert set(mine) == ids, f"jobs never leased: {ids - set(mine)}"
    assert max(mine.values()) == 1, {i: c for i, c in mine.items() if c > 1}
    # (Which scheduler wins is up to the database: on SQLite writers are serialized and one may take them all.)


def test_per_number_pacing(svc: CaseService) -> None:
    number = "2281239999"
    a = svc.request_callback(new_case(svc), number, allowed_prefixes=PREFIXES, now=T0)
    b = svc.request_callback(new_case(svc), number, allowed_prefixes=PREFIXES, now=T0)
    first = [j.id for j in svc.lease_due("p", now=T0, lease_s=60, limit=50, pacing_s=300) if j.id in (a.id, b.id)]
    assert len(first) == 1                        # the other job of the same number waits
    svc.record_attempt(first[0], "p", "answered", now=T0 + timedelta(seconds=10), schedule=SCHEDULE)
    soon = T0 + timedelta(seconds=200)
    assert not [j for j in svc.lease_due("p", now=soon, lease_s=60, limit=50, pacing_s=300) if j.id in (a.id, b.id)]
    later = T0 + timedelta(seconds=320)
    assert [j.id for j in svc.lease_due("p", now=later, lease_s=60, limit=50, pacing_s=300)
            if j.id in (a.id, b.id)] == [b.id if first[0] == a.id else a.id]


def test_accepted_callback_waits_for_a_status_change_on_any_channel(svc: CaseService) -> None:
    folio = new_case(svc)
    job = svc.accept_callback(folio, "228 123 7777", allowed_prefixes=PREFIXES, now=T0)
    assert job.state == "standby"
    assert job.id not in [j.id for j in svc.lease_due("s", now=T0 + timedelta(days=1), lease_s=60, limit=100)]
    svc.update_status(folio, "awaiting_citizen", "falta un documento", channel="office")   # a clerk, not the phone
    [after] = svc.callbacks_for(folio)
    assert after.state == "pending"
    assert after.id in [j.id for j in svc.lease_due("s", now=datetime.now(UTC) + timedelta(seconds=1), lease_s=60,
                                                     limit=100)]


def _mine(svc: CaseService, ids: set[int], now: datetime) -> list[int]:
    return [j.id for j in svc.lease_due("w", now=now, lease_s=60, limit=100) if j.id in ids]


def test_staff_callback_is_dialled_only_inside_its_window(svc: CaseService) -> None:
    """A clerk's or agent's callback: not before the window, retries only inside it, failed "window closed"
    when the window ends (whether it was never reached or a retry would fall past it)."""
    hour = timedelta(hours=1)
    folio = new_case(svc)
    job = svc.schedule_callback(folio, "2281239001", start=T0 + hour, end=T0 + hour * 1.5, note="Falta su firma",
                                requested_by="ventanilla3", reason="clerk_callback", allowed_prefixes=PREFIXES,
                                schedule=SCHEDULE, now=T0)
    assert (job.state, job.note, job.requested_by, job.not_after) == ("pending", "Falta su firma", "ventanilla3",
                                                                       T0 + hour * 1.5)
    assert _mine(svc, {job.id}, T0) == []                                   # before the window
    assert _mine(svc, {job.id}, T0 + hour) == [job.id]
    busy = svc.record_attempt(job.id, "w", "busy", now=T0 + hour, schedule=SCHEDULE)
    assert busy.state == "pending" and busy.next_attempt_at == T0 + hour + timedelta(seconds=600)
    assert _mine(svc, {job.id}, busy.next_attempt_at) == [job.id]
    closed = svc.record_attempt(job.id, "w", "no_answer", now=busy.next_attempt_at, schedule=SCHEDULE)
    assert (closed.state, closed.detail) == ("failed", "window closed")   # +3600 s is past the window's end

    missed = svc.schedule_callback(new_case(svc), "2281239002", start=T0, end=T0 + hour, note="Cita",
                                   requested_by="agente1", reason="agent_callback", allowed_prefixes=PREFIXES,
                                   schedule=SCHEDULE, now=T0)
    assert _mine(svc, {missed.id}, T0 + hour * 2) == []                    # nobody dialled in time
    [after] = svc.callbacks_for(missed.folio)
    assert (after.state, after.detail, after.attempts) == ("failed", "window closed", 0)


def test_staff_callback_replaces_the_open_one_and_refuses_bad_windows(svc: CaseService) -> None:
    folio = new_case(svc)
    accepted = svc.accept_callback(folio, "228 123 9003", allowed_prefixes=PREFIXES, now=T0)
    staff = svc.schedule_callback(folio, None, start=T0, end=T0 + timedelta(hours=2), note="  Revise   sus datos ",
                                  requested_by="agente1", reason="agent_callback", allowed_prefixes=PREFIXES,
                                  schedule=SCHEDULE, now=T0)
    # one call per case: the citizen's standby acceptance became the agent's call (its number kept)
    assert staff.id == accepted.id and (staff.state, staff.note, staff.number) == ("pending", "Revise sus datos",
                                                                                    "2281239003")
    assert len(svc.callbacks_for(folio)) == 1
    kw = {"requested_by": "c", "reason": "clerk_callback", "allowed_prefixes": PREFIXES, "schedule": SCHEDULE,
          "now": T0}
    other = new_case(svc)
    night = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)                        # 22:00-23:00 in Xalapa: quiet hours
    for start, end, note, message in (
            (T0, T0 - timedelta(minutes=1), "x", "termina antes"), (T0 - timedelta(hours=2), T0, "x", "ya pasó"),
            (night, night + timedelta(hours=1), "x", "horas sin llamadas"), (T0, T0 + timedelta(days=40), "x", "31 días"),
            (T0, T0 + timedelta(hours=1), "   ", "motivo")):
        with pytest.raises(InvalidInput, match=message):
            svc.schedule_callback(other, "2281239004", start=start, end=end, note=note, **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        svc.schedule_callback(other, "2281239004", start=T0, end=T0 + timedelta(hours=1), note="x",
                              **{**kw, "reason": "whatever"})  # type: ignore[arg-type]
    foreign = svc.schedule_callback(other, "+1 202 555 0143", start=T0, end=T0 + timedelta(hours=1), note="x",
                                    **kw)  # type: ignore[arg-type]
    assert (foreign.state, foreign.detail) == ("invalid", "number refused: not_allowed")
    assert staff.id in [j.id for j in svc.lease_due("w", now=T0, lease_s=60, limit=100)]
    with pytest.raises(InvalidInput, match="en curso"):                     # never re-plan a call being made
        svc.schedule_callback(folio, None, start=T0, end=T0 + timedelta(hours=1), note="x", **kw)  # type: ignore[arg-type]
