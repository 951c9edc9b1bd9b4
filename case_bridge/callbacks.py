"""Callback jobs: calls the node owes citizens (a case's status changed and they accepted a callback).

Durable in the database; picked by a dialer with a lease (one conditional UPDATE per job: of two schedulers
racing for a job exactly one sees its row updated), so a job is dialled by one node only; a dialer that dies
leaves a lease that expires and the job is due again. The schedule (attempts, spacing, quiet hours in the
citizen's local time) is `outbound.callback` in the configuration, passed in by the caller; every time comes in as
an argument (`now`), so tests drive a clock of their own.

    accept_callback(folio, phone, *, allowed_prefixes, now=None) -> CallbackView
        the citizen said yes to "¿Quiere que le llamemos cuando cambie el estado?" (phone or portal): a `standby`
        job that the next status change of the case, on any channel, makes due (cases.set_status)
    request_callback(folio, phone, *, reason, allowed_prefixes, now=None) -> CallbackView
        state pending, or invalid (not dialled; `detail` says why) or opted_out (the number asked for no calls)
    schedule_callback(folio, phone, *, start, end, note, requested_by, reason, allowed_prefixes, schedule, now)
        a clerk or an agent asks for a call within [start, end) with their reason (said after the PIN); the job is
        never dialled at or after `end` (lease_due fails it "window closed", so do retries that would fall past it)
    lease_due(owner, *, now, lease_s, limit, pacing_s=0) -> list[CallbackView]   jobs now this owner's to dial
    record_attempt(job_id, owner, outcome, *, now, schedule, sip_call_id=None, detail="") -> CallbackView
        outcome: answered (done) | opt_out (this and every pending job of the number stop) | busy | no_answer |
        silent | failed (retried per schedule until attempts are used up, then failed); each attempt is also a
        `callback_attempts` row (the dashboard's outbound outcomes)
    opt_out(number, *, channel) -> int            pending jobs of the number cancelled
    request_agent_return(folio, phone, *, agent, allowed_prefixes, now) -> (CallbackView, created)
        an agent's "Llamar de vuelta": a job (reason agent_return, requested_by the agent) due now; when the
        citizen answers and confirms, the call goes to that agent (ivr.agent_callback). One attempt per click: a
        busy / unanswered / failed attempt leaves the job `failed` for the agent to retry or cancel (no schedule:
        the agent is waiting at the console). A second click while it is open returns the same job.
    retry_agent_return(job_id, agent, *, now, pacing_s) / cancel_agent_return(job_id, agent, *, now)
    callbacks_for(folio) -> list[CallbackView]    for the clerk and agent pages
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from case_bridge.errors import InvalidInput
from case_bridge.models import CallbackAttempt, CallbackJob, CallbackOptOut, Case, StaffUser, utcnow
from case_bridge.unit_of_work import UnitOfWork, load_case
from foundation import dialplan
from foundation.config import CallbackConfig

RETRYABLE = frozenset({"busy", "no_answer", "silent", "failed"})
OUTCOMES = RETRYABLE | {"answered", "opt_out"}
OPEN_STATES = ("standby", "pending", "active")
STAFF_REASONS = ("clerk_callback", "agent_callback")
AGENT_RETURN = "agent_return"      # an agent calls the citizen back and talks with them (not a status message)
MAX_WINDOW = timedelta(days=31)     # a staff callback further out is a typo, not a plan
WINDOW_CLOSED = "window closed"


@dataclass(frozen=True)
class CallbackView:
    id: int
    case_id: int
    folio: str
    number_masked: str
    number: str
    reason: str
    state: str
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    last_outcome: str
    detail: str
    not_after: datetime | None = None       # window end of a staff-scheduled call
    note: str = ""                          # the staff's reason, said once the PIN is verified
    requested_by: str | None = None         # staff username; None when the citizen asked


def _view(job: CallbackJob) -> CallbackView:
    return CallbackView(job.id, job.case_id, job.case.folio, dialplan.mask(job.number), job.number, job.reason, job.state,
                        job.attempts, job.next_attempt_at, job.lease_owner, job.last_outcome, job.detail,
                        job.not_after, job.note or "", job.requested_by)


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def outside_quiet_hours(when: datetime, schedule: CallbackConfig) -> datetime:
    """`when`, or the end of the quiet period it falls in (the citizen's local time; the window may span
    midnight, e.g. 21:00-08:00)."""
    zone = ZoneInfo(schedule.timezone)
    local = when.astimezone(zone)
    start, end = _hhmm(schedule.quiet_start), _hhmm(schedule.quiet_end)
    now_t = local.time()
    if start == end:
        return when
    quiet = (start <= now_t or now_t < end) if start > end else (start <= now_t < end)
    if not quiet:
        return when
    day = local.date() if now_t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=zone).astimezone(when.tzinfo)


def next_attempt(attempts_done: int, now: datetime, schedule: CallbackConfig) -> datetime:
    spacing = schedule.spacing_s[min(attempts_done - 1, len(schedule.spacing_s) - 1)]
    return outside_quiet_hours(now + timedelta(seconds=spacing), schedule)


class Callbacks:
    """The callback topic of `CaseService`."""

    uow: UnitOfWork

    def accept_callback(self, folio: str, phone: str | None, *, allowed_prefixes: list[str],
                        now: datetime | None = None) -> CallbackView:
        return self.request_callback(folio, phone, reason="status_changed", allowed_prefixes=allowed_prefixes,
                                     now=now, standby=True)

    def request_callback(self, folio: str, phone: str | None, *, reason: str = "status_changed",
                         allowed_prefixes: list[str], now: datetime | None = None,
                         schedule: CallbackConfig | None = None, standby: bool = False) -> CallbackView:
        now = now or utcnow()

        def work(s: Session) -> CallbackView:
            case = load_case(s, folio)
            # no number given (the portal's "call me" button): the citizen's number on record
            number = phone if phone is not None else (case.citizen.phone if case.citizen is not None else None)
            decision = dialplan.check(number, allowed_prefixes)
            open_job = _open_job(s, case.id, lock=False)
            if open_job is not None:              # one call per case at a time: it will read the latest status
                open_job.reason, open_job.updated_at = reason[:64], now
                return _view(open_job)
            job = CallbackJob(case_id=case.id, number=decision.number or "", reason=reason[:64],
                              state="standby" if standby else "pending",
                              attempts=0, next_attempt_at=now, last_outcome="", detail="", created_at=now,
                              updated_at=now)
            if not _refuse_number(s, job, decision) and schedule is not None:
                job.next_attempt_at = outside_quiet_hours(now, schedule)
            s.add(job)
            s.flush()
            return _view(job)

        return self.uow.write(work)

    def schedule_callback(self, folio: str, phone: str | None = None, *, start: datetime, end: datetime,
                          note: str, requested_by: str, reason: str, allowed_prefixes: list[str],
                          schedule: CallbackConfig, now: datetime | None = None) -> CallbackView:
        """A call a clerk or an agent asks for, within [start, end), to `phone` or the number on record. The case's
        open job (a standby acceptance, a pending retry) becomes this one: one call per case at a time. A number
        outside the plan or opted out is recorded as such (the view says why), like `request_callback`."""
        now = now or utcnow()
        if reason not in STAFF_REASONS:
            raise InvalidInput(f"motivo de llamada desconocido: {reason}")
        note = " ".join(note.split())[:200]
        if not note:
            raise InvalidInput("Escriba el motivo de la llamada.")
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInput("La ventana necesita zona horaria.")
        if end <= start:
            raise InvalidInput("La ventana termina antes de empezar.")
        if end <= now:
            raise InvalidInput("La ventana ya pasó.")
        if end - start > MAX_WINDOW:
            raise InvalidInput("La ventana no puede pasar de 31 días.")
        first = outside_quiet_hours(max(start, now), schedule)
        if first >= end:
            raise InvalidInput(f"La ventana cae en horas sin llamadas ({schedule.quiet_start}-{schedule.quiet_end}).")

        def work(s: Session) -> CallbackView:
            case = load_case(s, folio)
            job = _open_job(s, case.id, lock=True)
            if job is not None and job.state == "active":
                raise InvalidInput("Hay una llamada en curso a este caso; espere a que termine.")
            # no number given: the open job's (the one the citizen accepted), else the number on record
            number = phone if phone is not None else (job.number if job is not None and job.number else
                                                      case.citizen.phone if case.citizen is not None else None)
            # a new request gets the whole schedule of attempts within its window
            job = _as_new_request(s, job, case.id, dialplan.check(number, allowed_prefixes), reason=reason,
                                  note=note, requested_by=requested_by[:64], due=first, not_after=end, now=now)
            s.flush()
            return _view(job)

        return self.uow.write(work)

    def lease_due(self, owner: str, *, now: datetime, lease_s: int, limit: int = 1,
                  pacing_s: int = 0) -> list[CallbackView]:
        """Take up to `limit` due jobs for `owner` (pending and due, or active with an expired lease), skipping a
        number that another job is calling now or called less than `pacing_s` ago. A job whose window has ended
        is failed ("window closed"), never dialled."""
        if limit <= 0:
            return []
        until = now + timedelta(seconds=lease_s)
        waiting = or_((CallbackJob.state == "pending") & (CallbackJob.next_attempt_at <= now),
                      (CallbackJob.state == "active") & (CallbackJob.lease_until < now))
        in_window = or_(CallbackJob.not_after.is_(None), CallbackJob.not_after > now)
        closed = waiting & CallbackJob.not_after.is_not(None) & (CallbackJob.not_after <= now)
        with self.uow.session() as s:             # a read first: the dialer's tick writes only when needed
            any_closed = s.execute(select(CallbackJob.id).where(closed).limit(1)).first() is not None
        if any_closed:
            self.uow.write(lambda s: s.execute(
                update(CallbackJob).where(closed)
                .values(state="failed", lease_owner=None, lease_until=None, detail=WINDOW_CLOSED, updated_at=now)
                .execution_options(synchronize_session=False)))
        due = waiting & in_window
        with self.uow.session() as s:
            candidates = list(s.execute(select(CallbackJob.id).where(due).order_by(CallbackJob.next_attempt_at)
                                        .limit(limit * 4)).scalars())
        taken: list[CallbackView] = []
        for job_id in candidates:
            if len(taken) >= limit:
                break

            def work(s: Session, job_id: int = job_id) -> CallbackView | None:
                if pacing_s and _recently_called(s, job_id, now, pacing_s):
                    return None
                # The WHERE re-checks due-ness: whoever updates the row first has it, the other matches nothing.
                result = s.execute(update(CallbackJob).where(CallbackJob.id == job_id, due)
                                   .values(state="active", lease_owner=owner, lease_until=until, updated_at=now)
                                   .execution_options(synchronize_session=False))
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    return None
                job = s.get(CallbackJob, job_id, populate_existing=True)
                assert job is not None
                if s.get(CallbackOptOut, job.number) is not None:     # opted out since it was queued
                    job.state, job.lease_owner, job.detail = "opted_out", None, "the number asked not to be called"
                    return None
                return _view(job)

            view = self.uow.write(work)
            if view is not None:
                taken.append(view)
        return taken

    def record_attempt(self, job_id: int, owner: str, outcome: str, *, now: datetime, schedule: CallbackConfig,
                       sip_call_id: str | None = None, detail: str = "") -> CallbackView:
        if outcome not in OUTCOMES:
            raise InvalidInput(f"unknown callback outcome {outcome!r}")

        def work(s: Session) -> CallbackView:
            job = s.get(CallbackJob, job_id, with_for_update=True)
            if job is None or job.state != "active" or job.lease_owner != owner:
                raise InvalidInput(f"callback job {job_id} is not leased by {owner}")
            job.attempts += 1
            job.last_outcome, job.detail, job.updated_at = outcome, detail[:200], now
            # every attempt, not just the job's last: the dashboard's outbound outcomes per period
            s.add(CallbackAttempt(job_id=job.id, at=now, outcome=outcome, sip_call_id=sip_call_id))
            job.sip_call_id = sip_call_id or job.sip_call_id
            job.lease_owner, job.lease_until = None, None
            if outcome == "answered":
                job.state = "done"
            elif outcome == "opt_out":
                job.state = "opted_out"
                _opt_out(s, job.number, "phone", now)
            elif job.reason == AGENT_RETURN or job.attempts >= schedule.attempts:
                job.state = "failed"           # an agent's call back: the agent retries or cancels it
            else:
                job.state, job.next_attempt_at = "pending", next_attempt(job.attempts, now, schedule)
                if job.not_after is not None and job.next_attempt_at >= job.not_after:
                    job.state, job.detail = "failed", WINDOW_CLOSED      # the retry would fall past the window
            return _view(job)

        return self.uow.write(work)

    def request_agent_return(self, folio: str, phone: str | None, *, agent: str, allowed_prefixes: list[str],
                             now: datetime | None = None) -> tuple[CallbackView, bool]:
        """An agent's "Llamar de vuelta": a job due now to `phone` (the number the caller left), else the case's.
        Returns (job, created). The case's open agent_return job is returned as it is (a double click, another
        tab); a standby acceptance or a pending staff call becomes this job (one call per case at a time, as
        `schedule_callback`); a job being dialled refuses. No number at all is an InvalidInput (nothing stored);
        a number outside the plan or opted out is recorded as such (the view says why)."""
        now = now or utcnow()
        self._check_agent(agent)

        def work(s: Session) -> tuple[CallbackView, bool]:
            case = load_case(s, folio)
            # the case row is the lock: two clicks at once queue one job (the second waits, then sees it)
            s.execute(select(Case.id).where(Case.id == case.id).with_for_update())
            job = _open_job(s, case.id, lock=True)
            if job is not None and job.reason == AGENT_RETURN and job.state in ("pending", "active"):
                return _view(job), False
            if job is not None and job.state == "active":
                raise InvalidInput("Hay una llamada en curso a este caso; espere a que termine.")
            number = phone or (case.citizen.phone if case.citizen is not None else None)
            if not number:
                raise InvalidInput("El caso no tiene número de teléfono: no hay a quién llamar.")
            job = _as_new_request(s, job, case.id, dialplan.check(number, allowed_prefixes), reason=AGENT_RETURN,
                                  note="", requested_by=agent, due=now, not_after=None, now=now)
            s.flush()
            return _view(job), True

        return self.uow.write(work)

    def _check_agent(self, agent: str) -> None:
        """The agent who asks must be an active agent (or admin) account: their phone gets the call."""
        with self.uow.session() as s:
            user = s.execute(select(StaffUser).where(StaffUser.username == agent)).scalar_one_or_none()
            if user is None or not user.active or user.role not in ("agent", "admin"):
                raise InvalidInput("agente desconocido o inactivo")

    def _agent_job(self, s: Session, job_id: int, agent: str) -> CallbackJob:
        job = s.get(CallbackJob, job_id, with_for_update=True) if job_id > 0 else None
        if job is None or job.reason != AGENT_RETURN:
            raise InvalidInput("llamada desconocida")
        if job.requested_by != agent:
            raise InvalidInput("Esta llamada la pidió otro agente.")
        return job

    def retry_agent_return(self, job_id: int, agent: str, *, now: datetime | None = None,
                           pacing_s: int = 0) -> CallbackView:
        """Dial an agent's call back again (after busy / no answer / failed): due now, or once `pacing_s` has
        passed since the last attempt (the number's pacing holds for retries too)."""
        now = now or utcnow()
        self._check_agent(agent)

        def work(s: Session) -> CallbackView:
            job = self._agent_job(s, job_id, agent)
            if job.state in ("pending", "active"):
                return _view(job)               # already on its way: a double click
            if job.state != "failed":
                raise InvalidInput("Esta llamada ya no se puede reintentar.")
            if s.get(CallbackOptOut, job.number) is not None:
                job.state, job.detail, job.updated_at = "opted_out", "the number asked not to be called", now
                return _view(job)
            last = job.updated_at                 # the last attempt's end (record_attempt)
            job.state, job.detail, job.updated_at = "pending", "", now
            job.next_attempt_at = max(now, last + timedelta(seconds=pacing_s))
            return _view(job)

        return self.uow.write(work)

    def cancel_agent_return(self, job_id: int, agent: str, *, now: datetime | None = None) -> CallbackView:
        now = now or utcnow()

        def work(s: Session) -> CallbackView:
            job = self._agent_job(s, job_id, agent)
            if job.state == "active":
                raise InvalidInput("La llamada está en curso; no se puede cancelar ahora.")
            if job.state in ("pending", "failed"):
                job.state, job.detail, job.updated_at = "cancelled", "cancelled by the agent", now
                job.lease_owner, job.lease_until = None, None
            return _view(job)

        return self.uow.write(work)

    def opt_out(self, number: str, *, channel: str, now: datetime | None = None) -> int:
        digits = dialplan.normalize(number).number
        if digits is None:
            raise InvalidInput("not a phone number")
        return self.uow.write(lambda s: _opt_out(s, digits, channel, now or utcnow()))

    def callbacks_for(self, folio: str) -> list[CallbackView]:
        with self.uow.session() as s:
            case = load_case(s, folio, for_view=True)
            jobs = s.execute(select(CallbackJob).where(CallbackJob.case_id == case.id).order_by(CallbackJob.id))
            return [_view(j) for j in jobs.scalars()]


def _open_job(s: Session, case_id: int, *, lock: bool) -> CallbackJob | None:
    """The case's one open job (standby, pending or active), with `lock` locked for update."""
    query = select(CallbackJob).where(CallbackJob.case_id == case_id, CallbackJob.state.in_(OPEN_STATES))
    return s.execute(query.with_for_update() if lock else query).scalar_one_or_none()


def _refuse_number(s: Session, job: CallbackJob, decision: dialplan.DialDecision) -> bool:
    """Record on `job` why its number is not to be called (outside the dial plan, or opted out); False if it may
    be."""
    if not decision.ok:
        job.state, job.detail = "invalid", f"number refused: {decision.reason}"
    elif s.get(CallbackOptOut, decision.number) is not None:
        job.state, job.detail = "opted_out", "the number asked not to be called"
    else:
        return False
    return True


def _as_new_request(s: Session, job: CallbackJob | None, case_id: int, decision: dialplan.DialDecision, *,
                    reason: str, note: str, requested_by: str, due: datetime, not_after: datetime | None,
                    now: datetime) -> CallbackJob:
    """The case's open job (a standby acceptance, a pending retry; None: a new job, added to `s`) made a fresh
    request from staff: pending from `due`, no attempts, outcome or lease yet; a refused number recorded as
    such (`_refuse_number`)."""
    if job is None:
        job = CallbackJob(case_id=case_id, created_at=now)
        s.add(job)
    job.number, job.reason, job.note, job.requested_by = decision.number or "", reason, note, requested_by
    job.state, job.attempts, job.next_attempt_at, job.not_after = "pending", 0, due, not_after
    job.last_outcome, job.detail, job.updated_at = "", "", now
    job.lease_owner, job.lease_until = None, None
    _refuse_number(s, job, decision)
    return job


def activate_standby(s: Session, case_id: int, now: datetime) -> int:
    """The case's status changed: its accepted (standby) callback is due now. Returns how many were."""
    jobs = s.execute(select(CallbackJob).where(CallbackJob.case_id == case_id, CallbackJob.state == "standby"))
    count = 0
    for job in jobs.scalars():
        job.state, job.next_attempt_at, job.updated_at = "pending", now, now
        count += 1
    return count


def _recently_called(s: Session, job_id: int, now: datetime, pacing_s: int) -> bool:
    number = s.execute(select(CallbackJob.number).where(CallbackJob.id == job_id)).scalar_one()
    since = now - timedelta(seconds=pacing_s)
    busy = s.execute(select(CallbackJob.id).where(
        CallbackJob.number == number, CallbackJob.id != job_id,
        ((CallbackJob.state == "active") & (CallbackJob.lease_until >= now))
        | ((CallbackJob.attempts > 0) & (CallbackJob.updated_at > since))).limit(1)).first()
    return busy is not None


def _opt_out(s: Session, number: str, channel: str, now: datetime) -> int:
    if s.get(CallbackOptOut, number) is None:
        s.add(CallbackOptOut(number=number, at=now, channel=channel[:16]))
    jobs = s.execute(select(CallbackJob).where(CallbackJob.number == number, CallbackJob.state == "pending"))
    cancelled = 0
    for job in jobs.scalars():
        job.state, job.detail, job.updated_at = "opted_out", "the number asked not to be called", now
        cancelled += 1
    return cancelled
