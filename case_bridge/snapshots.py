"""Frozen snapshots (`case_bridge.views`) built from rows, and the one-statement status read of the hot path."""
from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import bindparam, select

from case_bridge.errors import InvalidInput
from case_bridge.models import CHANNELS, Case, CaseStatusChange, Citizen, StaffUser, Tramite
from case_bridge.views import CaseView, InteractionView, StaffView, StatusChangeView, TramiteInfo

LAST_CHANGE = (select(CaseStatusChange.id).where(CaseStatusChange.case_id == Case.id)
                .order_by(CaseStatusChange.id.desc()).limit(1).correlate(Case).scalar_subquery())
STATUS_ROW = (
    select(Case.folio, Case.status, Case.pin_hash, Case.created_channel, Case.current_channel, Case.missing,
           Case.data, Case.appointment_office, Case.appointment_at, Case.created_at, Case.updated_at, Case.version,
           Citizen.name.label("citizen_name"), Citizen.curp, Citizen.phone,
           Tramite.id.label("t_id"), Tramite.name.label("t_name"), Tramite.agency, Tramite.start_channels,
           Tramite.finish_channels, Tramite.requirements, Tramite.offices,
           CaseStatusChange.from_status, CaseStatusChange.to_status, CaseStatusChange.note,
           CaseStatusChange.channel.label("h_channel"), CaseStatusChange.actor, CaseStatusChange.at)
    .join(Tramite, Tramite.id == Case.tramite_id)
    .outerjoin(Citizen, Citizen.id == Case.citizen_id)
    .outerjoin(CaseStatusChange, CaseStatusChange.id == LAST_CHANGE)
)
# Built once: a statement rebuilt per call (`STATUS_ROW.where(Case.folio == x)`) costs its construction, a new
# cache key and a result-metadata adaptation on every lookup (~0.5 ms, profiled in docs/web-tier.md).
STATUS_BY_FOLIO = STATUS_ROW.where(Case.folio == bindparam("folio"))


def status_view(r: Any) -> CaseView:
    """A CaseView from one `STATUS_ROW`: the last status change only, no timeline."""
    tramite = TramiteInfo(r.t_id, r.t_name, r.agency, tuple(r.start_channels or ()), tuple(r.finish_channels or ()),
                          tuple(r.requirements or ()), tuple(r.offices or ()))
    last = (StatusChangeView(r.from_status, r.to_status, r.note, r.h_channel, r.actor, r.at),) if r.to_status else ()
    return CaseView(folio=r.folio, status=r.status, tramite=tramite, created_channel=r.created_channel,
                    current_channel=r.current_channel, missing=tuple(r.missing or ()), data=dict(r.data or {}),
                    appointment_office=r.appointment_office, appointment_at=r.appointment_at,
                    created_at=r.created_at, updated_at=r.updated_at, version=r.version,
                    citizen_name=r.citizen_name, citizen_curp=r.curp, citizen_phone=r.phone, history=last)


def check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise InvalidInput(f"canal desconocido: {channel}")


def tramite_info(t: Tramite) -> TramiteInfo:
    return TramiteInfo(t.id, t.name, t.agency, tuple(t.start_channels or ()), tuple(t.finish_channels or ()),
                       tuple(t.requirements or ()), tuple(t.offices or ()))


def staff_view(u: StaffUser) -> StaffView:
    return StaffView(u.id, u.username, u.role, u.display_name, u.active, credential_stamp(u.password_hash))


def credential_stamp(password_hash: str) -> str:
    """A short digest of the stored password hash (salted: every password change gives a new one). Kept in the
    session, so a password change ends the sessions signed in before it, in every web process, Redis or not."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def case_view(c: Case) -> CaseView:
    citizen = c.citizen
    return CaseView(
        folio=c.folio, status=c.status, tramite=tramite_info(c.tramite), created_channel=c.created_channel,
        current_channel=c.current_channel, missing=tuple(c.missing or ()), data=dict(c.data or {}),
        appointment_office=c.appointment_office, appointment_at=c.appointment_at, created_at=c.created_at,
        updated_at=c.updated_at, version=c.version,
        citizen_name=citizen.name if citizen else None, citizen_curp=citizen.curp if citizen else None,
        citizen_phone=citizen.phone if citizen else None,
        history=tuple(StatusChangeView(h.from_status, h.to_status, h.note, h.channel, h.actor, h.at)
                      for h in c.history),
        interactions=tuple(sorted((InteractionView(i.id, i.channel, i.started_at, i.ended_at, i.outcome, i.summary,
                                                   i.actor, i.direction) for i in c.interactions),
                                  key=lambda i: (i.started_at, i.id))),
    )
