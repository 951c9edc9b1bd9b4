"""Cases and their verification: open, look up, verify a citizen (PIN or CURP end), status, data, visits."""
from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from case_bridge import folio as folios
from case_bridge import hashing
from case_bridge.calls import phone_interaction
from case_bridge.errors import CaseBridgeError, CaseNotFound, ChannelNotAllowed, InvalidInput, StaleCase, UnknownTramite
from case_bridge.folio import MalformedFolio
from case_bridge.models import DIRECTIONS, STATUSES, Case, CaseStatusChange, Citizen, Interaction, Tramite, utcnow
from case_bridge.ratelimit import FOLIO_MAX_FAILURES, Lock, client_delay_s
from case_bridge.rollup import track
from case_bridge.snapshots import STATUS_BY_FOLIO, case_view, check_channel, status_view
from case_bridge.unit_of_work import MAX_TEXT, UnitOfWork, case_snapshot, load_call, load_case
from case_bridge.views import LOCAL_TZ, CaseView, CitizenInfo, OpenedCase, StatusResult
from foundation.logs import kv, mask_curp

log = logging.getLogger("case_bridge.cases")

_DUMMY_PIN_HASH = hashing.hash_pin("0000")   # verified against when a folio is unknown: same timing either way


def verification_keys(folio: str, client: str | None, call: str | None = None) -> list[str]:
    """The lockout counters one verification of `folio` by `client` (in phone call `call`) reads and counts."""
    return [f"folio:{folio}"] + ([f"client:{client}"] if client else []) + ([f"call:{call}"] if call else [])


def client_throttle(keys: list[str], locks: list[Lock]) -> float:
    """The delay owed by the client key among `keys` (see ratelimit.client_delay_s)."""
    return max((client_delay_s(lock.failures) for key, lock in zip(keys, locks, strict=True)
                if key.startswith("client:")), default=0.0)


def locked_result(locks: list[Lock]) -> StatusResult:
    return StatusResult("locked", retry_after_s=max(lock.retry_after_s for lock in locks), attempts_left=0,
                        message="demasiados intentos; espere e intente más tarde")


def check_pin(pin: str, stored: str | None) -> bool:
    """The PIN against the case's hash. An unknown folio verifies the dummy hash, never cached, so it costs what
    a wrong PIN costs (a folio's existence can't be read from the timing)."""
    if stored is None:
        hashing.verify_secret(pin.strip(), _DUMMY_PIN_HASH)
        return False
    return hashing.VERIFIED_PINS.verify(pin.strip(), stored)


class Cases:
    """The case topic of `CaseService`."""

    uow: UnitOfWork

    def open_case(self, tramite_id: str, channel: str, *, citizen: CitizenInfo | None = None,
                  idempotency_key: str | None = None, call_id: str | None = None, summary: str = "",
                  missing: Sequence[str] | None = None, actor: str | None = None) -> OpenedCase:
        check_channel(channel)
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
            raise InvalidInput("idempotency_key: 1 to 200 characters")
        for _ in range(5):
            try:
                return self.uow.write(lambda s: self._open_case(s, tramite_id, channel, citizen, idempotency_key,
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
                return OpenedCase(case_snapshot(s, existing), hashing.derived_pin(self.uow.pin_secret(s), key), False)
        tramite = s.get(Tramite, tramite_id)
        if tramite is None:
            raise UnknownTramite(tramite_id)
        if tramite.start_channels and channel not in tramite.start_channels:
            raise ChannelNotAllowed(f"el trámite {tramite.name} no se inicia por {channel}")
        person = _citizen(s, citizen) if citizen else None
        pin = hashing.derived_pin(self.uow.pin_secret(s), key) if key else hashing.new_pin()
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
            call = load_call(s, call_id)
            with track(s, call):
                call.case_id = case.id
            phone_interaction(s, call, case, text)
        else:
            s.add(Interaction(case_id=case.id, channel=channel, started_at=now, ended_at=now, outcome="case_opened",
                              summary=text, actor=actor,
                              idempotency_key=f"{key}:open" if key else None))
        s.flush()
        log.info(kv(event="case_opened", case=case.folio, tramite=tramite.id, channel=channel,
                    curp=mask_curp(citizen.curp if citizen else None)))
        return OpenedCase(case_snapshot(s, case.folio), pin, True)

    def status_for(self, folio_text: str, *, pin: str | None = None, curp_last4: str | None = None,
                   client: str | None = None, call: str | None = None, timeline: bool = True) -> StatusResult:
        """Verify and answer a case's status. `client` is who asks (an address, a caller number: slowed after many
        failures), `call` the phone call it comes from (its failures end verifying in that call)."""
        try:
            folio = folios.normalize(folio_text)
        except MalformedFolio as exc:
            return StatusResult("malformed", message=str(exc))
        if not pin and not curp_last4:
            raise InvalidInput("se necesita el PIN o los últimos 4 caracteres de la CURP")
        keys = verification_keys(folio, client, call)
        locks = self.uow.limiter.check_many(keys)
        if any(lock.locked for lock in locks):
            return locked_result(locks)
        case, row = None, None
        if timeline:
            with self.uow.session() as s:
                case = s.execute(select(Case).where(Case.folio == folio).options(
                    joinedload(Case.tramite), joinedload(Case.citizen), selectinload(Case.history),
                    selectinload(Case.interactions))).unique().scalar_one_or_none()
                stored_pin, curp = (case.pin_hash, case.citizen.curp if case.citizen else None) if case else (None, None)
        else:
            # the status-only hot path (phone line, status API): one Core statement on an autocommit connection
            # (no BEGIN/ROLLBACK round trips), no ORM objects; the web tier on PostgreSQL uses
            # case_bridge.status_lookup instead (the same steps on the event loop)
            with self.uow.reader() as conn:
                row = conn.execute(STATUS_BY_FOLIO, {"folio": folio}).first()
            stored_pin, curp = (row.pin_hash, row.curp) if row else (None, None)
        verified = False
        if pin is not None:
            verified = check_pin(pin, stored_pin)
        elif curp_last4 is not None and curp:
            verified = secrets.compare_digest(curp[-4:].upper(), curp_last4.strip().upper()[-4:])
        view = None
        if verified:
            view = case_view(case) if timeline and case is not None else status_view(row)
        if view is not None:
            self.clear_failures(keys, locks)
            return StatusResult("ok", case=view, throttle_s=client_throttle(keys, locks))
        return self.count_denial(folio, keys)

    def clear_failures(self, keys: list[str], locks: list[Lock]) -> None:
        """After a verified lookup: forget the earlier failures of its folio (not an active lock). A client's count
        stays until its window ends: otherwise verifying one's own case would wipe the delay of a folio walk."""
        for key, lock in zip(keys, locks, strict=True):
            if lock.failures and not key.startswith("client:"):
                self.uow.limiter.succeed(key)

    def count_denial(self, folio: str, keys: list[str]) -> StatusResult:
        """After a failed verification: count it on every key (folio, client, call); locked once a limit is hit.
        A call from a client already being slowed is locked at its first failure: a phone turn cannot be held for
        the delay (the dialogue would time out), so each further guess from that number costs a new call."""
        worst = None
        throttle = 0.0
        locked: list[Lock] = []
        for key in keys:        # every key counts the failure, even once one of them is locked by it
            lock = self.uow.limiter.fail(key)
            if key.startswith("folio:"):
                worst = lock
            elif key.startswith("client:"):
                throttle = client_delay_s(lock.failures)
            elif key.startswith("call:") and throttle and not lock.locked:
                lock = self.uow.limiter.lock(key)
            if lock.locked:
                log.warning(kv(event="verification_locked", key=key.split(":")[0], case=folio,
                               lock_s=lock.retry_after_s))
                locked.append(lock)
        if locked:
            return StatusResult("locked", retry_after_s=max(lock.retry_after_s for lock in locked), attempts_left=0,
                                message="demasiados intentos; espere e intente más tarde", throttle_s=throttle)
        left = FOLIO_MAX_FAILURES - worst.failures if worst else None
        return StatusResult("denied", attempts_left=left, message="el folio o la verificación no coinciden",
                            throttle_s=throttle)

    def reset_verification_lock(self, folio: str) -> None:
        self.uow.limiter.reset(f"folio:{folios.normalize(folio)}")

    def find_case(self, folio_text: str) -> CaseView | None:
        try:
            with self.uow.session() as s:
                return case_snapshot(s, folio_text)
        except CaseNotFound:
            return None

    def find_cases_by_curp(self, curp: str) -> list[CaseView]:
        with self.uow.session() as s:
            q = (select(Case).join(Citizen).where(Citizen.curp == curp.strip().upper()).order_by(Case.created_at.desc())
                 .options(selectinload(Case.tramite), selectinload(Case.citizen), selectinload(Case.history),
                          selectinload(Case.interactions)))
            return [case_view(c) for c in s.execute(q).scalars()]

    def add_interaction(self, folio: str, channel: str, outcome: str, summary: str = "", *,
                        actor: str | None = None, started_at: datetime | None = None,
                        ended_at: datetime | None = None, idempotency_key: str | None = None,
                        direction: str = "inbound") -> int:
        check_channel(channel)
        if direction not in DIRECTIONS:
            raise InvalidInput(f"direction must be one of {DIRECTIONS}")

        def work(s: Session) -> int:
            if idempotency_key is not None:
                found = s.execute(select(Interaction.id).where(Interaction.idempotency_key == idempotency_key))
                existing = found.scalar_one_or_none()
                if existing is not None:
                    return existing
            case = load_case(s, folio)
            now = utcnow()
            item = Interaction(case_id=case.id, channel=channel, started_at=started_at or now,
                               ended_at=ended_at or now, outcome=outcome[:64], summary=summary[:MAX_TEXT],
                               actor=actor, idempotency_key=idempotency_key, direction=direction)
            s.add(item)
            case.current_channel, case.updated_at = channel, now
            s.flush()
            return item.id

        return self.uow.write(work)

    def update_status(self, folio: str, status: str, note: str, *, channel: str, actor: str | None = None,
                      expected_version: int | None = None) -> CaseView:
        if status not in STATUSES:
            raise InvalidInput(f"estado desconocido: {status}")
        check_channel(channel)

        def work(s: Session) -> CaseView:
            case = load_case(s, folio)
            if expected_version is not None and case.version != expected_version:
                raise StaleCase("el caso cambió mientras lo editaba; revise los cambios y vuelva a intentar")
            set_status(s, case, status, note, channel, actor)
            return after_write(s, case)

        return self.uow.write(work)

    def complete_missing(self, folio: str, values: dict[str, str], *, channel: str,
                         actor: str | None = None) -> CaseView:
        check_channel(channel)
        given = {k: v.strip()[:MAX_TEXT] for k, v in values.items() if v and v.strip()}
        if not given:
            raise InvalidInput("no se recibió ningún dato")

        def work(s: Session) -> CaseView:
            case = load_case(s, folio)
            unknown = set(given) - set(case.missing)
            if unknown:
                raise InvalidInput("dato no solicitado: " + ", ".join(sorted(unknown)))
            case.data = {**case.data, **given}
            case.missing = [m for m in case.missing if m not in given]
            case.updated_at, case.current_channel = utcnow(), channel
            s.add(Interaction(case_id=case.id, channel=channel, outcome="data_completed", actor=actor,
                              summary="entregó: " + ", ".join(given)))
            if not case.missing and case.status == "awaiting_citizen":
                set_status(s, case, "in_review", "Datos completos", channel, actor)
            return after_write(s, case)

        return self.uow.write(work)

    def schedule_appointment(self, folio: str, office: str, when: datetime, *, channel: str,
                             actor: str | None = None) -> CaseView:
        check_channel(channel)
        if when.tzinfo is None or when <= utcnow():
            raise InvalidInput("la cita debe ser en una fecha futura")

        def work(s: Session) -> CaseView:
            case = load_case(s, folio)
            if case.tramite.offices and office not in case.tramite.offices:
                raise InvalidInput("oficina no disponible para este trámite")
            if case.status not in ("open", "awaiting_citizen", "in_review", "appointment_scheduled"):
                raise InvalidInput("el caso ya no admite citas")
            case.appointment_office, case.appointment_at = office[:200], when
            s.add(Interaction(case_id=case.id, channel=channel, outcome="appointment", actor=actor,
                              summary=f"agendó cita en {office} el {when.astimezone(LOCAL_TZ):%d/%m/%Y a las %H:%M}"))
            set_status(s, case, "appointment_scheduled", f"Cita en {office}", channel, actor)
            return after_write(s, case)

        return self.uow.write(work)

    def finish_online(self, folio: str, *, actor: str | None = None, channel: str = "web") -> CaseView:
        """The citizen finishes the trámite themselves on the web portal or at a kiosk, where its catalog entry
        allows that channel and nothing is missing."""
        where = {"web": ("en línea", "finished_online"), "kiosk": ("en el quiosco", "finished_at_kiosk")}
        if channel not in where:
            raise ChannelNotAllowed(f"no se termina un trámite por el canal {channel}")
        place, outcome = where[channel]

        def work(s: Session) -> CaseView:
            case = load_case(s, folio)
            if channel not in case.tramite.finish_channels:
                raise ChannelNotAllowed(f"este trámite no se puede terminar {place}")
            if case.missing:
                raise InvalidInput("aún faltan datos: " + ", ".join(case.missing))
            if case.status not in ("open", "in_review", "awaiting_citizen"):
                raise InvalidInput("el caso no está abierto")
            s.add(Interaction(case_id=case.id, channel=channel, outcome=outcome, actor=actor,
                              summary=f"terminó el trámite {place}"))
            set_status(s, case, "resolved", f"Terminado {place} por el ciudadano", channel, actor)
            return after_write(s, case)

        return self.uow.write(work)


def _citizen(s: Session, info: CitizenInfo) -> Citizen:
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

def set_status(s: Session, case: Case, status: str, note: str, channel: str, actor: str | None) -> None:
    now = utcnow()
    s.add(CaseStatusChange(case_id=case.id, from_status=case.status, to_status=status, note=note[:MAX_TEXT],
                           channel=channel, actor=actor, at=now))
    case.status, case.current_channel, case.updated_at = status, channel, now
    log.info(kv(event="case_status", case=case.folio, status=status, channel=channel))
    # A callback the citizen accepted is owed now, whichever channel changed the status.
    from case_bridge.callbacks import activate_standby
    activate_standby(s, case.id, now)

def after_write(s: Session, case: Case) -> CaseView:
    s.flush()
    s.expire(case, ["history", "interactions"])
    return case_snapshot(s, case.folio)
