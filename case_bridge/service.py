"""The case-bridge service: the only door to the citizen record. Engine, Rasa actions and web all call this.

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
               timeline: bool = True) -> StatusResult
        Citizen-side lookup. reason: ok | malformed (bad length/check digit: not counted) | denied (unknown folio
        or wrong verification, indistinguishable) | locked (3 failures on the folio, or 10 from one `client`).
        timeline=False: `case.interactions` empty and `case.history` only the last change (one SQL statement:
        the hot path for the phone line and the status API).
    find_case(folio_text) -> CaseView | None            staff/internal lookup, no verification: never for citizens
    find_cases_by_curp(curp) -> list[CaseView]          staff lookup
    add_interaction(folio, channel, outcome, summary="", *, actor=None, started_at=None, ended_at=None,
                    idempotency_key=None) -> int
    update_status(folio, status, note, *, channel, actor=None, expected_version=None) -> CaseView
        Appends to the status history. expected_version (from a form) raises StaleCase if another channel
        changed the case meanwhile; without it, concurrent writers are serialized by optimistic locking + retry.
    complete_missing(folio, values: dict[str, str], *, channel, actor=None) -> CaseView
    schedule_appointment(folio, office, when: datetime, *, channel, actor=None) -> CaseView
    finish_online(folio, *, actor=None) -> CaseView      only if the trámite can be finished on the web
    reset_verification_lock(folio) -> None               staff, after checking identity
Calls (the IVR engine, through ivr.call.recorder.CaseRecorder)
    link_call(call_id, caller, *, called="", node="", started_at=None, answered_at=None) -> CallView
    link_call_case(call_id, folio, *, summary="") -> None
    set_call_summary(call_id, summary) -> None
    add_turn(call_id, speaker, text, intent=None, confidence=None, *, at=None, idempotency_key=None) -> bool
        Committed before it returns (the reply is spoken after). Same key twice -> stored once (returns False).
    close_call(call_id, disposition, *, transfer_target=None, ended_at=None) -> None
    get_call(call_id) -> CallView | None;  transcript(call_id, after_id=0) -> list[TurnView]
Escalation (the agent console's richer queue is case_bridge.escalation.EscalationDesk)
    escalate(call_id, *, reason="", target="") -> EscalationView      idempotent per call
    escalation_queue(include_taken=False) -> list[EscalationView];  get_escalation(id) -> EscalationView | None
    take_escalation(escalation_id, staff_id) -> EscalationView        AlreadyTaken if someone else has it
    close_escalation(escalation_id, disposition) -> EscalationView
Staff and catalog
    create_staff(username, password, role, display_name="") -> StaffView;  set_password(username, password)
    authenticate(username, password) -> StaffView | None;  get_staff(staff_id) -> StaffView | None
    upsert_tramites(Iterable[TramiteInfo]) -> int;  list_tramites() -> list[TramiteInfo];  get_tramite(id)

Errors: DatabaseUnavailable (connection-level failure: retry later / use the outbox), MalformedFolio, CaseNotFound,
UnknownTramite, ChannelNotAllowed, InvalidInput, StaleCase, AlreadyTaken, CallNotFound — all CaseBridgeError.
"""
from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError

from case_bridge import folio as folios
from case_bridge import hashing
from case_bridge.db import make_engine, make_sessionmaker
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
from case_bridge.folio import MalformedFolio
from case_bridge.models import (
    CHANNELS,
    ROLES,
    STATUSES,
    CallRecord,
    Case,
    CaseStatusChange,
    Citizen,
    Escalation,
    Interaction,
    NodeSecret,
    StaffUser,
    Tramite,
    TranscriptTurn,
    utcnow,
)
from case_bridge.ratelimit import FOLIO_MAX_FAILURES, AttemptLimiter
from case_bridge.views import (
    LOCAL_TZ,
    CallView,
    CaseView,
    CitizenInfo,
    EscalationView,
    InteractionView,
    OpenedCase,
    StaffView,
    StatusChangeView,
    StatusResult,
    TramiteInfo,
    TurnView,
)
from foundation.logs import kv, mask_curp, mask_phone

if TYPE_CHECKING:
    from foundation.config import Settings

log = logging.getLogger("case_bridge.service")

T = TypeVar("T")
STALE_RETRIES = 8
MAX_TEXT = 4000
SPEAKERS = ("caller", "portal", "agent")
DISPOSITIONS = ("completed", "transferred", "transfer_failed", "abandoned", "error")
_DUMMY_PIN_HASH = hashing.hash_pin("0000")   # verified against when a folio is unknown: same timing either way

__all__ = [
    "AlreadyTaken", "CallNotFound", "CaseBridgeError", "CaseNotFound", "CaseService", "ChannelNotAllowed",
    "CitizenInfo", "DatabaseUnavailable", "InvalidInput", "MalformedFolio", "StaleCase", "TramiteInfo",
    "UnknownTramite",
]


class CaseService:
    """The citizen record's API. Thread-safe; share one per process."""

    def __init__(self, engine: Engine, *, redis_url: str | None = None, ratelimit_prefix: str = "veratur") -> None:
        self.engine = engine
        self._sessions = make_sessionmaker(engine)
        # same pool; on PostgreSQL reads skip the BEGIN/ROLLBACK round trips (SQLite keeps its BEGIN IMMEDIATE)
        self._read_engine = (engine.execution_options(isolation_level="AUTOCOMMIT")
                             if engine.dialect.name == "postgresql" else engine)
        self.limiter = AttemptLimiter(redis_url, self._sessions, prefix=ratelimit_prefix)
        self._pin_key: bytes | None = None

    @classmethod
    def from_url(cls, url: str, *, redis_url: str | None = None, **kwargs: object) -> CaseService:
        return cls(make_engine(url), redis_url=redis_url, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings) -> CaseService:
        return cls(make_engine(settings.database_url), redis_url=settings.redis.url)

    def close(self) -> None:
        self.limiter.close()
        self.engine.dispose()

    # -- plumbing -----------------------------------------------------------------------------------------
    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A session whose connection-level failures surface as DatabaseUnavailable."""
        try:
            with self._sessions() as session:
                yield session
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseUnavailable(str(exc.orig or exc).splitlines()[0]) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailable(str(exc.orig or exc).splitlines()[0]) from exc
            raise

    @contextmanager
    def _reader(self) -> Iterator[Connection]:
        """A read-only Core connection (autocommit on PostgreSQL), with the same error mapping as `_session`."""
        try:
            with self._read_engine.connect() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseUnavailable(str(exc.orig or exc).splitlines()[0]) from exc

    def _write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a transaction; on an optimistic-lock conflict re-read and run it again."""
        for attempt in range(STALE_RETRIES):
            try:
                with self._session() as s, s.begin():
                    return work(s)
            except StaleDataError:
                log.info(kv(event="case_write_conflict", attempt=attempt + 1))
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # de-synchronize the writers that collided
        raise StaleCase("el caso cambia demasiado rápido; intente de nuevo")

    def _case(self, s: Session, folio: str, *, for_view: bool = False) -> Case:
        q = select(Case).where(Case.folio == folios.normalize(folio))
        if not for_view:
            # Writers take the row lock on PostgreSQL so they queue instead of colliding; the version column still
            # catches any writer that read without it (and a form's expected_version).
            q = q.with_for_update()
        else:
            q = q.options(selectinload(Case.tramite), selectinload(Case.citizen), selectinload(Case.history),
                          selectinload(Case.interactions))
        case = s.execute(q).scalar_one_or_none()
        if case is None:
            raise CaseNotFound(folio)
        return case

    def _call(self, s: Session, call_id: str) -> CallRecord:
        call = s.execute(select(CallRecord).where(CallRecord.sip_call_id == call_id)).scalar_one_or_none()
        if call is None:
            raise CallNotFound(call_id)
        return call

    def _view(self, s: Session, folio: str) -> CaseView:
        return _case_view(self._case(s, folio, for_view=True))

    def _pin_secret(self, s: Session) -> bytes:
        if self._pin_key is None:
            row = s.get(NodeSecret, "pin_derivation")
            if row is None:
                row = NodeSecret(name="pin_derivation", value=secrets.token_hex(32))
                try:
                    with s.begin_nested():
                        s.add(row)
                except IntegrityError:   # another process created it first
                    row = s.get(NodeSecret, "pin_derivation")
                    assert row is not None
            self._pin_key = bytes.fromhex(row.value)
        return self._pin_key

    # -- cases ----------------------------------------------------------------------------------------------
    def open_case(self, tramite_id: str, channel: str, *, citizen: CitizenInfo | None = None,
                  idempotency_key: str | None = None, call_id: str | None = None, summary: str = "",
                  missing: Sequence[str] | None = None, actor: str | None = None) -> OpenedCase:
        _check_channel(channel)
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
            raise InvalidInput("idempotency_key: 1 to 200 characters")
        for _ in range(5):
            try:
                return self._write(lambda s: self._open_case(s, tramite_id, channel, citizen, idempotency_key,
                                                             call_id, summary, missing, actor))
            except IntegrityError:
                # a folio collision (1 in 10^7) or a concurrent open with the same key: the retry sorts it out
                continue
        raise CaseBridgeError("no se pudo abrir el caso")

    def _open_case(self, s: Session, tramite_id: str, channel: str, citizen: CitizenInfo | None,
                   key: str | None, call_id: str | None, summary: str, missing: Sequence[str] | None,
                   actor: str | None) -> OpenedCase:
        if key is not None:
            existing = s.execute(select(Case.folio).where(Case.idempotency_key == key)).scalar_one_or_none()
            if existing is not None:
                return OpenedCase(self._view(s, existing), hashing.derived_pin(self._pin_secret(s), key), False)
        tramite = s.get(Tramite, tramite_id)
        if tramite is None:
            raise UnknownTramite(tramite_id)
        if tramite.start_channels and channel not in tramite.start_channels:
            raise ChannelNotAllowed(f"el trámite {tramite.name} no se inicia por {channel}")
        person = self._citizen(s, citizen) if citizen else None
        pin = hashing.derived_pin(self._pin_secret(s), key) if key else hashing.new_pin()
        now = utcnow()
        owed = list(tramite.requirements if missing is None else missing)
        status = "awaiting_citizen" if owed else "open"
        case = Case(folio=folios.new_folio(), pin_hash=hashing.hash_pin(pin), citizen=person, tramite=tramite,
                    status=status, created_channel=channel, current_channel=channel, missing=owed, data={},
                    idempotency_key=key, created_at=now, updated_at=now)
        s.add(case)
        s.flush()
        s.add(CaseStatusChange(case_id=case.id, from_status=None, to_status=status, channel=channel, actor=actor,
                               note=f"Caso abierto: {tramite.name}", at=now))
        text = summary or f"inició el trámite {tramite.name}"
        if call_id is not None:
            call = self._call(s, call_id)
            call.case_id = case.id
            self._call_interaction(s, call, case, text)
        else:
            s.add(Interaction(case_id=case.id, channel=channel, started_at=now, ended_at=now, outcome="case_opened",
                              summary=text, actor=actor,
                              idempotency_key=f"{key}:open" if key else None))
        s.flush()
        log.info(kv(event="case_opened", case=case.folio, tramite=tramite.id, channel=channel,
                    curp=mask_curp(citizen.curp if citizen else None)))
        return OpenedCase(self._view(s, case.folio), pin, True)

    def _citizen(self, s: Session, info: CitizenInfo) -> Citizen:
        curp = info.curp.strip().upper() if info.curp else None
        if curp is not None and len(curp) != 18:
            raise InvalidInput("la CURP tiene 18 caracteres")
        phone = "".join(ch for ch in info.phone if ch.isdigit()) if info.phone else None
        person = s.execute(select(Citizen).where(Citizen.curp == curp)).scalar_one_or_none() if curp else None
        if person is None:
            person = Citizen(name=info.name.strip()[:200], curp=curp, phone=phone, email=info.email)
            s.add(person)
        else:
            person.phone = person.phone or phone
            person.email = person.email or info.email
        return person

    def status_for(self, folio_text: str, *, pin: str | None = None, curp_last4: str | None = None,
                   client: str | None = None, timeline: bool = True) -> StatusResult:
        try:
            folio = folios.normalize(folio_text)
        except MalformedFolio as exc:
            return StatusResult("malformed", message=str(exc))
        if not pin and not curp_last4:
            raise InvalidInput("se necesita el PIN o los últimos 4 caracteres de la CURP")
        keys = [f"folio:{folio}"] + ([f"client:{client}"] if client else [])
        locks = self.limiter.check_many(keys)
        if any(lock.locked for lock in locks):
            return StatusResult("locked", retry_after_s=max(lock.retry_after_s for lock in locks), attempts_left=0,
                                message="demasiados intentos; espere e intente más tarde")
        case, row = None, None
        if timeline:
            with self._session() as s:
                case = s.execute(select(Case).where(Case.folio == folio).options(
                    joinedload(Case.tramite), joinedload(Case.citizen), selectinload(Case.history),
                    selectinload(Case.interactions))).unique().scalar_one_or_none()
                stored_pin, curp = (case.pin_hash, case.citizen.curp if case.citizen else None) if case else (None, None)
        else:
            # the status-only hot path (phone line, status API): one Core statement on an autocommit connection
            # (no BEGIN/ROLLBACK round trips), no ORM objects
            with self._reader() as conn:
                row = conn.execute(_STATUS_ROW.where(Case.folio == folio)).first()
            stored_pin, curp = (row.pin_hash, row.curp) if row else (None, None)
        verified = False
        if pin is not None:
            verified = hashing.verify_secret(pin.strip(), stored_pin or _DUMMY_PIN_HASH) and stored_pin is not None
        elif curp_last4 is not None and curp:
            verified = secrets.compare_digest(curp[-4:].upper(), curp_last4.strip().upper()[-4:])
        view = None
        if verified:
            view = _case_view(case) if timeline and case is not None else _status_view(row)
        if view is not None:
            for key, lock in zip(keys, locks, strict=True):
                if lock.failures:
                    self.limiter.succeed(key)
            return StatusResult("ok", case=view)
        worst = None
        for key in keys:
            lock = self.limiter.fail(key)
            if key.startswith("folio:"):
                worst = lock
            if lock.locked:
                log.warning(kv(event="verification_locked", key=key.split(":")[0], case=folio))
                return StatusResult("locked", retry_after_s=lock.retry_after_s, attempts_left=0,
                                    message="demasiados intentos; espere e intente más tarde")
        left = FOLIO_MAX_FAILURES - worst.failures if worst else None
        return StatusResult("denied", attempts_left=left, message="el folio o la verificación no coinciden")

    def reset_verification_lock(self, folio: str) -> None:
        self.limiter.reset(f"folio:{folios.normalize(folio)}")

    def find_case(self, folio_text: str) -> CaseView | None:
        try:
            with self._session() as s:
                return self._view(s, folio_text)
        except CaseNotFound:
            return None

    def find_cases_by_curp(self, curp: str) -> list[CaseView]:
        with self._session() as s:
            q = (select(Case).join(Citizen).where(Citizen.curp == curp.strip().upper()).order_by(Case.created_at.desc())
                 .options(selectinload(Case.tramite), selectinload(Case.citizen), selectinload(Case.history),
                          selectinload(Case.interactions)))
            return [_case_view(c) for c in s.execute(q).scalars()]

    def add_interaction(self, folio: str, channel: str, outcome: str, summary: str = "", *,
                        actor: str | None = None, started_at: datetime | None = None,
                        ended_at: datetime | None = None, idempotency_key: str | None = None) -> int:
        _check_channel(channel)

        def work(s: Session) -> int:
            if idempotency_key is not None:
                found = s.execute(select(Interaction.id).where(Interaction.idempotency_key == idempotency_key))
                existing = found.scalar_one_or_none()
                if existing is not None:
                    return existing
            case = self._case(s, folio)
            now = utcnow()
            item = Interaction(case_id=case.id, channel=channel, started_at=started_at or now,
                               ended_at=ended_at or now, outcome=outcome[:64], summary=summary[:MAX_TEXT],
                               actor=actor, idempotency_key=idempotency_key)
            s.add(item)
            case.current_channel, case.updated_at = channel, now
            s.flush()
            return item.id

        return self._write(work)

    def update_status(self, folio: str, status: str, note: str, *, channel: str, actor: str | None = None,
                      expected_version: int | None = None) -> CaseView:
        if status not in STATUSES:
            raise InvalidInput(f"estado desconocido: {status}")
        _check_channel(channel)

        def work(s: Session) -> CaseView:
            case = self._case(s, folio)
            if expected_version is not None and case.version != expected_version:
                raise StaleCase("el caso cambió mientras lo editaba; revise los cambios y vuelva a intentar")
            self._set_status(s, case, status, note, channel, actor)
            return self._after(s, case)

        return self._write(work)

    def _set_status(self, s: Session, case: Case, status: str, note: str, channel: str, actor: str | None) -> None:
        now = utcnow()
        s.add(CaseStatusChange(case_id=case.id, from_status=case.status, to_status=status, note=note[:MAX_TEXT],
                               channel=channel, actor=actor, at=now))
        case.status, case.current_channel, case.updated_at = status, channel, now
        log.info(kv(event="case_status", case=case.folio, status=status, channel=channel))

    def _after(self, s: Session, case: Case) -> CaseView:
        s.flush()
        s.expire(case, ["history", "interactions"])
        return self._view(s, case.folio)

    def complete_missing(self, folio: str, values: dict[str, str], *, channel: str,
                         actor: str | None = None) -> CaseView:
        _check_channel(channel)
        given = {k: v.strip()[:MAX_TEXT] for k, v in values.items() if v and v.strip()}
        if not given:
            raise InvalidInput("no se recibió ningún dato")

        def work(s: Session) -> CaseView:
            case = self._case(s, folio)
            unknown = set(given) - set(case.missing)
            if unknown:
                raise InvalidInput("dato no solicitado: " + ", ".join(sorted(unknown)))
            case.data = {**case.data, **given}
            case.missing = [m for m in case.missing if m not in given]
            case.updated_at, case.current_channel = utcnow(), channel
            s.add(Interaction(case_id=case.id, channel=channel, outcome="data_completed", actor=actor,
                              summary="entregó: " + ", ".join(given)))
            if not case.missing and case.status == "awaiting_citizen":
                self._set_status(s, case, "in_review", "Datos completos", channel, actor)
            return self._after(s, case)

        return self._write(work)

    def schedule_appointment(self, folio: str, office: str, when: datetime, *, channel: str,
                             actor: str | None = None) -> CaseView:
        _check_channel(channel)
        if when.tzinfo is None or when <= utcnow():
            raise InvalidInput("la cita debe ser en una fecha futura")

        def work(s: Session) -> CaseView:
            case = self._case(s, folio)
            if case.tramite.offices and office not in case.tramite.offices:
                raise InvalidInput("oficina no disponible para este trámite")
            if case.status not in ("open", "awaiting_citizen", "in_review", "appointment_scheduled"):
                raise InvalidInput("el caso ya no admite citas")
            case.appointment_office, case.appointment_at = office[:200], when
            s.add(Interaction(case_id=case.id, channel=channel, outcome="appointment", actor=actor,
                              summary=f"agendó cita en {office} el {when.astimezone(LOCAL_TZ):%d/%m/%Y a las %H:%M}"))
            self._set_status(s, case, "appointment_scheduled", f"Cita en {office}", channel, actor)
            return self._after(s, case)

        return self._write(work)

    def finish_online(self, folio: str, *, actor: str | None = None) -> CaseView:
        def work(s: Session) -> CaseView:
            case = self._case(s, folio)
            if "web" not in case.tramite.finish_channels:
                raise ChannelNotAllowed("este trámite no se puede terminar en línea")
            if case.missing:
                raise InvalidInput("aún faltan datos: " + ", ".join(case.missing))
            if case.status not in ("open", "in_review", "awaiting_citizen"):
                raise InvalidInput("el caso no está abierto")
            s.add(Interaction(case_id=case.id, channel="web", outcome="finished_online", actor=actor,
                              summary="terminó el trámite en línea"))
            self._set_status(s, case, "resolved", "Terminado en línea por el ciudadano", "web", actor)
            return self._after(s, case)

        return self._write(work)

    # -- calls ----------------------------------------------------------------------------------------------
    def link_call(self, call_id: str, caller: str, *, called: str = "", node: str = "",
                  started_at: datetime | None = None, answered_at: datetime | None = None) -> CallView:
        def work(s: Session) -> CallView:
            call = s.execute(select(CallRecord).where(CallRecord.sip_call_id == call_id)).scalar_one_or_none()
            if call is None:
                call = CallRecord(sip_call_id=call_id[:255], caller_masked=mask_phone(caller),
                                  caller_hash=hashing.phone_hash(caller), called=called[:64], node=node[:64],
                                  started_at=started_at or utcnow(), answered_at=answered_at)
                s.add(call)
                s.flush()
            return self._call_view(s, call)

        try:
            return self._write(work)
        except IntegrityError:   # the same call recorded concurrently (a replay racing the live write)
            found = self.get_call(call_id)
            assert found is not None
            return found

    def _call_view(self, s: Session, call: CallRecord) -> CallView:
        folio = s.get(Case, call.case_id).folio if call.case_id else None  # type: ignore[union-attr]
        return CallView(call.sip_call_id, call.caller_masked, call.node, call.started_at, call.answered_at,
                        call.ended_at, call.disposition, call.transfer_target, folio, call.summary)

    def get_call(self, call_id: str) -> CallView | None:
        with self._session() as s:
            try:
                return self._call_view(s, self._call(s, call_id))
            except CallNotFound:
                return None

    def _call_interaction(self, s: Session, call: CallRecord, case: Case, summary: str) -> Interaction:
        key = f"call:{call.sip_call_id}:case:{case.id}"[:200]
        item = s.execute(select(Interaction).where(Interaction.idempotency_key == key)).scalar_one_or_none()
        if item is None:
            item = Interaction(case_id=case.id, channel="phone", started_at=call.started_at, outcome="in_call",
                               summary=summary[:MAX_TEXT], call_id=call.id, idempotency_key=key)
            s.add(item)
            case.current_channel, case.updated_at = "phone", utcnow()
        elif summary:
            item.summary = summary[:MAX_TEXT]
        return item

    def link_call_case(self, call_id: str, folio: str, *, summary: str = "") -> None:
        def work(s: Session) -> None:
            call, case = self._call(s, call_id), self._case(s, folio)
            call.case_id = case.id
            self._call_interaction(s, call, case, summary or call.summary or "")

        self._write(work)

    def set_call_summary(self, call_id: str, summary: str) -> None:
        def work(s: Session) -> None:
            call = self._call(s, call_id)
            call.summary = summary[:MAX_TEXT]
            for item in s.execute(select(Interaction).where(Interaction.call_id == call.id)).scalars():
                item.summary = summary[:MAX_TEXT]

        self._write(work)

    def add_turn(self, call_id: str, speaker: str, text: str, intent: str | None = None,
                 confidence: float | None = None, *, at: datetime | None = None,
                 idempotency_key: str | None = None) -> bool:
        if speaker not in SPEAKERS:
            raise InvalidInput(f"speaker must be one of {SPEAKERS}")
        at = at or utcnow()
        key = (idempotency_key or f"{call_id}:{speaker}:{at.isoformat()}")[:255]

        def work(s: Session) -> bool:
            if s.execute(select(TranscriptTurn.id).where(TranscriptTurn.idempotency_key == key)).first():
                return False
            call = self._call(s, call_id)
            s.add(TranscriptTurn(call_id=call.id, speaker=speaker, text=text[:MAX_TEXT], intent=intent,
                                 confidence=confidence, at=at, idempotency_key=key))
            return True

        try:
            return self._write(work)
        except IntegrityError:   # a concurrent writer stored the same key first
            return False

    def close_call(self, call_id: str, disposition: str, *, transfer_target: str | None = None,
                   ended_at: datetime | None = None) -> None:
        if disposition not in DISPOSITIONS:
            raise InvalidInput(f"disposition must be one of {DISPOSITIONS}")

        def work(s: Session) -> None:
            call = self._call(s, call_id)
            if call.ended_at is not None:
                return  # already closed: a replayed close changes nothing
            call.ended_at = ended_at or utcnow()
            call.disposition, call.transfer_target = disposition, transfer_target
            for item in s.execute(select(Interaction).where(Interaction.call_id == call.id,
                                                            Interaction.channel == "phone")).scalars():
                item.ended_at, item.outcome = call.ended_at, disposition

        self._write(work)

    def transcript(self, call_id: str, after_id: int = 0) -> list[TurnView]:
        with self._session() as s:
            call = self._call(s, call_id)
            rows = s.execute(select(TranscriptTurn).where(TranscriptTurn.call_id == call.id,
                                                          TranscriptTurn.id > after_id)
                             .order_by(TranscriptTurn.id)).scalars()
            return [TurnView(t.id, call_id, t.speaker, t.text, t.intent, t.confidence, t.at) for t in rows]

    # -- escalation -----------------------------------------------------------------------------------------
    def escalate(self, call_id: str, *, reason: str = "", target: str = "") -> EscalationView:
        def work(s: Session) -> EscalationView:
            call = self._call(s, call_id)
            esc = s.execute(select(Escalation).where(Escalation.call_id == call.id)).scalar_one_or_none()
            if esc is None:
                esc = Escalation(call_id=call.id, case_id=call.case_id, reason=reason[:64], target=target[:255])
                s.add(esc)
                s.flush()
            return self._esc_view(s, esc)

        return self._write(work)

    def _esc_view(self, s: Session, esc: Escalation) -> EscalationView:
        call = s.get(CallRecord, esc.call_id)
        assert call is not None
        case_id = esc.case_id or call.case_id
        case = s.get(Case, case_id) if case_id else None
        staff = s.get(StaffUser, esc.taken_by) if esc.taken_by else None
        return EscalationView(esc.id, call.sip_call_id, case.folio if case else None, esc.reason, esc.target,
                              esc.requested_at, staff.username if staff else None, esc.taken_at, esc.closed_at,
                              esc.disposition, call.caller_masked)

    def escalation_queue(self, include_taken: bool = False) -> list[EscalationView]:
        with self._session() as s:
            q = select(Escalation).where(Escalation.closed_at.is_(None)).order_by(Escalation.requested_at)
            if not include_taken:
                q = q.where(Escalation.taken_at.is_(None))
            return [self._esc_view(s, e) for e in s.execute(q).scalars()]

    def get_escalation(self, escalation_id: int) -> EscalationView | None:
        with self._session() as s:
            esc = s.get(Escalation, escalation_id)
            return self._esc_view(s, esc) if esc else None

    def take_escalation(self, escalation_id: int, staff_id: int) -> EscalationView:
        def work(s: Session) -> EscalationView:
            esc = s.execute(select(Escalation).where(Escalation.id == escalation_id).with_for_update()).scalar_one_or_none()
            if esc is None:
                raise InvalidInput("escalación desconocida")
            if esc.taken_by is not None and esc.taken_by != staff_id:
                raise AlreadyTaken("otro agente ya tomó esta llamada")
            if esc.taken_by is None:
                staff = s.get(StaffUser, staff_id)
                if staff is None:
                    raise InvalidInput("agente desconocido")
                esc.taken_by, esc.taken_at = staff_id, utcnow()
                call = s.get(CallRecord, esc.call_id)
                case_id = esc.case_id or (call.case_id if call else None)
                if case_id:
                    case = s.get(Case, case_id)
                    assert case is not None
                    s.add(Interaction(case_id=case_id, channel="call_center", outcome="agent_took_call",
                                      actor=staff.username, summary="un agente atendió la llamada transferida",
                                      idempotency_key=f"escalation:{esc.id}:taken"))
                    case.current_channel, case.updated_at = "call_center", utcnow()
            return self._esc_view(s, esc)

        return self._write(work)

    def close_escalation(self, escalation_id: int, disposition: str) -> EscalationView:
        def work(s: Session) -> EscalationView:
            esc = s.get(Escalation, escalation_id)
            if esc is None:
                raise InvalidInput("escalación desconocida")
            esc.closed_at = esc.closed_at or utcnow()
            esc.disposition = disposition[:32]
            return self._esc_view(s, esc)

        return self._write(work)

    # -- staff ----------------------------------------------------------------------------------------------
    def create_staff(self, username: str, password: str, role: str, display_name: str = "") -> StaffView:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {ROLES}")
        if not username or len(username) > 64 or not username.replace(".", "").replace("_", "").isalnum():
            raise InvalidInput("usuario: letras, números, punto o guion bajo (máx. 64)")
        if len(password) < 8:
            raise InvalidInput("la contraseña debe tener al menos 8 caracteres")

        def work(s: Session) -> StaffView:
            if s.execute(select(StaffUser.id).where(StaffUser.username == username)).first():
                raise InvalidInput(f"el usuario {username} ya existe")
            user = StaffUser(username=username, password_hash=hashing.hash_secret(password), role=role,
                             display_name=display_name or username)
            s.add(user)
            s.flush()
            return _staff_view(user)

        return self._write(work)

    def set_password(self, username: str, password: str) -> None:
        if len(password) < 8:
            raise InvalidInput("la contraseña debe tener al menos 8 caracteres")

        def work(s: Session) -> None:
            user = s.execute(select(StaffUser).where(StaffUser.username == username)).scalar_one_or_none()
            if user is None:
                raise InvalidInput(f"usuario desconocido: {username}")
            user.password_hash = hashing.hash_secret(password)

        self._write(work)

    def authenticate(self, username: str, password: str) -> StaffView | None:
        with self._session() as s, s.begin():
            user = s.execute(select(StaffUser).where(StaffUser.username == username)).scalar_one_or_none()
            ok = hashing.verify_secret(password, user.password_hash if user else _DUMMY_PIN_HASH)
            if user is None or not ok or not user.active:
                log.info(kv(event="staff_login_failed"))
                return None
            user.last_login_at = utcnow()
            return _staff_view(user)

    def get_staff(self, staff_id: int) -> StaffView | None:
        with self._session() as s:
            user = s.get(StaffUser, staff_id)
            return _staff_view(user) if user and user.active else None

    # -- catalog --------------------------------------------------------------------------------------------
    def upsert_tramites(self, entries: Sequence[TramiteInfo]) -> int:
        def work(s: Session) -> int:
            for e in entries:
                row = s.get(Tramite, e.id) or Tramite(id=e.id)
                row.name, row.agency = e.name, e.agency
                row.start_channels, row.finish_channels = list(e.start_channels), list(e.finish_channels)
                row.requirements, row.offices = list(e.requirements), list(e.offices)
                s.add(row)
            return len(entries)

        return self._write(work)

    def list_tramites(self) -> list[TramiteInfo]:
        with self._session() as s:
            return [_tramite_info(t) for t in s.execute(select(Tramite).order_by(Tramite.name)).scalars()]

    def get_tramite(self, tramite_id: str) -> TramiteInfo | None:
        with self._session() as s:
            row = s.get(Tramite, tramite_id)
            return _tramite_info(row) if row else None


_LAST_CHANGE = (select(CaseStatusChange.id).where(CaseStatusChange.case_id == Case.id)
                .order_by(CaseStatusChange.id.desc()).limit(1).correlate(Case).scalar_subquery())
_STATUS_ROW = (
    select(Case.folio, Case.status, Case.pin_hash, Case.created_channel, Case.current_channel, Case.missing,
           Case.data, Case.appointment_office, Case.appointment_at, Case.created_at, Case.updated_at, Case.version,
           Citizen.name.label("citizen_name"), Citizen.curp, Citizen.phone,
           Tramite.id.label("t_id"), Tramite.name.label("t_name"), Tramite.agency, Tramite.start_channels,
           Tramite.finish_channels, Tramite.requirements, Tramite.offices,
           CaseStatusChange.from_status, CaseStatusChange.to_status, CaseStatusChange.note,
           CaseStatusChange.channel.label("h_channel"), CaseStatusChange.actor, CaseStatusChange.at)
    .join(Tramite, Tramite.id == Case.tramite_id)
    .outerjoin(Citizen, Citizen.id == Case.citizen_id)
    .outerjoin(CaseStatusChange, CaseStatusChange.id == _LAST_CHANGE)
)


def _status_view(r: Any) -> CaseView:
    """A CaseView from one `_STATUS_ROW`: the last status change only, no timeline."""
    tramite = TramiteInfo(r.t_id, r.t_name, r.agency, tuple(r.start_channels or ()), tuple(r.finish_channels or ()),
                          tuple(r.requirements or ()), tuple(r.offices or ()))
    last = (StatusChangeView(r.from_status, r.to_status, r.note, r.h_channel, r.actor, r.at),) if r.to_status else ()
    return CaseView(folio=r.folio, status=r.status, tramite=tramite, created_channel=r.created_channel,
                    current_channel=r.current_channel, missing=tuple(r.missing or ()), data=dict(r.data or {}),
                    appointment_office=r.appointment_office, appointment_at=r.appointment_at,
                    created_at=r.created_at, updated_at=r.updated_at, version=r.version,
                    citizen_name=r.citizen_name, citizen_curp=r.curp, citizen_phone=r.phone, history=last)


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise InvalidInput(f"canal desconocido: {channel}")


def _tramite_info(t: Tramite) -> TramiteInfo:
    return TramiteInfo(t.id, t.name, t.agency, tuple(t.start_channels or ()), tuple(t.finish_channels or ()),
                       tuple(t.requirements or ()), tuple(t.offices or ()))


def _staff_view(u: StaffUser) -> StaffView:
    return StaffView(u.id, u.username, u.role, u.display_name, u.active)


def _case_view(c: Case) -> CaseView:
    citizen = c.citizen
    return CaseView(
        folio=c.folio, status=c.status, tramite=_tramite_info(c.tramite), created_channel=c.created_channel,
        current_channel=c.current_channel, missing=tuple(c.missing or ()), data=dict(c.data or {}),
        appointment_office=c.appointment_office, appointment_at=c.appointment_at, created_at=c.created_at,
        updated_at=c.updated_at, version=c.version,
        citizen_name=citizen.name if citizen else None, citizen_curp=citizen.curp if citizen else None,
        citizen_phone=citizen.phone if citizen else None,
        history=tuple(StatusChangeView(h.from_status, h.to_status, h.note, h.channel, h.actor, h.at)
                      for h in c.history),
        interactions=tuple(sorted((InteractionView(i.id, i.channel, i.started_at, i.ended_at, i.outcome, i.summary,
                                                   i.actor) for i in c.interactions),
                                  key=lambda i: (i.started_at, i.id))),
    )
