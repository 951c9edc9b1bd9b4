"""The case-bridge service: the only door to the citizen record. Engine, Rasa actions and web all call this.

It is assembled from one topic module each — `cases` (cases and verification), `calls` (calls and transcripts),
`escalation_queue`, `staff`, `catalog` — over one shared `unit_of_work.UnitOfWork`; the agent desk
(`case_bridge.escalation`) uses the same public unit of work.

Construct one per process and share it (it is thread-safe: each call opens its own short session):

    svc = CaseService.from_settings(settings)            # or CaseService(make_engine(url), redis_url=...)
    svc = CaseService.from_url("sqlite:///var/veratur.db", redis_url="redis://127.0.0.1:6379/0")

Every method is synchronous (blocking SQL). From asyncio code call them with `await asyncio.to_thread(svc.x, ...)`
(the recorder and the web app do). Results are frozen snapshots from `case_bridge.views`.

Cases
    open_case(tramite_id, channel, *, citizen: CitizenInfo | None = None, idempotency_key: str | None = None,
              call_id: str | None = None, summary: str = "", missing: Sequence[str] | None = None,
              actor: str | None = None) -> OpenedCase
        New case with a speakable folio (8 digits, Damm check digit) and a 4-digit PIN (returned in clear once;
        an idempotent retry with the same key returns the same folio and PIN, `created=False`). `call_id` (SIP
        Call-ID) links the case to that call and records the phone Interaction with `summary`.
    status_for(folio_text, *, pin: str | None = None, curp_last4: str | None = None, client: str | None = None,
               call: str | None = None, timeline: bool = True) -> StatusResult
        Citizen-side lookup. reason: ok | malformed (bad length/check digit: not counted) | denied (unknown folio
        or wrong verification, indistinguishable) | locked (3 failures on the folio: 15 min, doubling for each
        lock within a day; or 5 in the phone call `call`; a `client` with 10 failures is slowed by `throttle_s`).
        timeline=False: `case.interactions` empty and `case.history` only the last change (one SQL statement:
        the hot path for the phone line and the status API).
    find_case(folio_text) -> CaseView | None            staff/internal lookup, no verification: never for citizens
    find_cases_by_curp(curp) -> list[CaseView]          staff lookup
    add_interaction(folio, channel, outcome, summary="", *, actor=None, started_at=None, ended_at=None,
                    idempotency_key=None, direction="inbound") -> int     direction outbound: the node called
    update_status(folio, status, note, *, channel, actor=None, expected_version=None) -> CaseView
        Appends to the status history. expected_version (from a form) raises StaleCase if another channel
        changed the case meanwhile; without it, concurrent writers are serialized by optimistic locking + retry.
    complete_missing(folio, values: dict[str, str], *, channel, actor=None) -> CaseView
    schedule_appointment(folio, office, when: datetime, *, channel, actor=None) -> CaseView
    finish_online(folio, *, actor=None) -> CaseView      only if the trámite can be finished on the web
    reset_verification_lock(folio) -> None               staff, after checking identity
Calls (the IVR engine, through ivr.call.recorder.CaseRecorder)
    link_call(call_id, caller, *, called="", node="", started_at=None, answered_at=None,
              direction="inbound") -> CallView
    link_call_case(call_id, folio, *, summary="") -> None
    set_call_summary(call_id, summary) -> None
    add_turn(call_id, speaker, text, intent=None, confidence=None, *, at=None, idempotency_key=None) -> bool
        Committed before it returns (the reply is spoken after). Same key twice -> stored once (returns False).
    close_call(call_id, disposition, *, transfer_target=None, ended_at=None) -> None
    get_call(call_id) -> CallView | None;  transcript(call_id, after_id=0) -> list[TurnView]
Call-detail records and analytics (case_bridge/call_records.py, case_bridge/analytics.py)
    record_call_stats(call_id, stats) -> None            per-call figures and tallies, sent by the engine at the end
    search_calls(CallQuery, page=1, per_page=50) -> CallPage;  iter_calls(CallQuery);  call_detail(call_id)
    dashboard(since, until) -> Dashboard                  every figure of the supervisor's dashboard for a period
    live_calls(max_age_s) -> LiveView                     calls not yet ended, per node and worker; agent queue
Escalation (the agent console's richer queue is case_bridge.escalation.EscalationDesk)
    escalate(call_id, *, reason="", target="") -> EscalationView      idempotent per call
    escalation_queue(include_taken=False) -> list[EscalationView];  get_escalation(id) -> EscalationView | None
    take_escalation(escalation_id, staff_id) -> EscalationView        AlreadyTaken if someone else has it
    close_escalation(escalation_id, disposition) -> EscalationView
Callbacks (case_bridge/callbacks.py: durable outbound calls with a lease, retry schedule, opt-outs)
    request_callback(folio, phone, *, reason, allowed_prefixes, now=None) -> CallbackView
    lease_due(owner, *, now, lease_s, limit) -> list[CallbackView]
    record_attempt(job_id, owner, outcome, *, now, schedule, ...) -> CallbackView;  opt_out(number, *, channel)
    callbacks_for(folio) -> list[CallbackView]
Kiosks (case_bridge/kiosks.py: enrolled devices of /kiosco)
    enrol_kiosk(name, *, actor="") -> (KioskView, token)   the device token in clear only here; stored as SHA-256
    revoke_kiosk(kiosk_id);  kiosk_for_token(token) -> KioskView | None (None if unknown or revoked);  list_kiosks()
Staff and catalog
    create_staff(username, password, role, display_name="") -> StaffView;  set_password(username, password)
    set_active(username, active)   a password change or a deactivation ends the user's sessions everywhere
    authenticate(username, password) -> StaffView | None;  get_staff(staff_id) -> StaffView | None
    upsert_tramites(Iterable[TramiteInfo]) -> int;  list_tramites() -> list[TramiteInfo];  get_tramite(id)

Errors: DatabaseUnavailable (connection-level failure: retry later / use the outbox), MalformedFolio, CaseNotFound,
UnknownTramite, ChannelNotAllowed, InvalidInput, StaleCase, AlreadyTaken, CallNotFound — all CaseBridgeError.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine

from case_bridge.analytics import Analytics, DashboardCache
from case_bridge.call_records import CallRecords
from case_bridge.callbacks import Callbacks
from case_bridge.calls import Calls
from case_bridge.cases import Cases
from case_bridge.catalog import TramiteCatalog
from case_bridge.db import make_engine
from case_bridge.errors import (
    AlreadyTaken,
    CallNotFound,
    CaseBridgeError,
    CaseNotFound,
    ChannelNotAllowed,
    DatabaseUnavailable,
    InvalidInput,
    StaleCase,
    UnknownTramite,
)
from case_bridge.escalation_queue import EscalationQueue
from case_bridge.folio import MalformedFolio
from case_bridge.kiosks import Kiosks
from case_bridge.ratelimit import AttemptLimiter
from case_bridge.staff import StaffDirectory
from case_bridge.unit_of_work import MAX_TEXT, UnitOfWork
from case_bridge.views import CitizenInfo, TramiteInfo

if TYPE_CHECKING:
    from foundation.config import Settings

__all__ = [
    "MAX_TEXT", "AlreadyTaken", "CallNotFound", "CaseBridgeError", "CaseNotFound", "CaseService",
    "ChannelNotAllowed", "CitizenInfo", "DatabaseUnavailable", "InvalidInput", "MalformedFolio", "StaleCase",
    "TramiteInfo", "UnknownTramite",
]


class CaseService(Cases, Calls, CallRecords, Analytics, EscalationQueue, StaffDirectory, TramiteCatalog, Callbacks,
                  Kiosks):
    """The citizen record's API: the topic classes over one `UnitOfWork`. Thread-safe; share one per process."""

    def __init__(self, engine: Engine, *, redis_url: str | None = None, ratelimit_prefix: str = "veratur") -> None:
        self.uow = UnitOfWork(engine, redis_url=redis_url, ratelimit_prefix=ratelimit_prefix)
        self.dashboard_cache = DashboardCache()

    @property
    def engine(self) -> Engine:
        return self.uow.engine

    @property
    def limiter(self) -> AttemptLimiter:
        return self.uow.limiter

    @classmethod
    def from_url(cls, url: str, *, redis_url: str | None = None, **kwargs: object) -> CaseService:
        return cls(make_engine(url), redis_url=redis_url, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings) -> CaseService:
        return cls(make_engine(settings.database_url), redis_url=settings.redis.url)

    def close(self) -> None:
        self.uow.close()
