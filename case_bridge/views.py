"""What the case-bridge service hands out: frozen snapshots, never live ORM rows.

Callers (web handlers, Rasa actions, the IVR engine) get plain data they can keep after the session is closed,
and can't write to the tables by accident. Spanish labels for statuses and channels live here so the phone, the web
and the receipts say the same words.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo("America/Mexico_City")   # how times are shown and said to citizens

STATUS_LABELS: dict[str, str] = {
    "open": "Abierto",
    "awaiting_citizen": "Faltan datos o documentos",
    "in_review": "En revisión",
    "appointment_scheduled": "Cita programada",
    "resolved": "Resuelto",
    "closed": "Cerrado",
    "cancelled": "Cancelado",
}
CHANNEL_LABELS: dict[str, str] = {
    "phone": "Llamada telefónica",
    "web": "Portal web",
    "office": "Visita a oficina",
    "kiosk": "Quiosco",
    "call_center": "Centro de atención telefónica",
}
DIRECTION_LABELS: dict[str, str] = {"inbound": "Recibida", "outbound": "Saliente"}
OPEN_STATUSES = frozenset({"open", "awaiting_citizen", "in_review", "appointment_scheduled"})


@dataclass(frozen=True, slots=True)
class CitizenInfo:
    """Who the citizen says they are when a case is opened (all optional but the name)."""
    name: str
    curp: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class TramiteInfo:
    id: str
    name: str
    agency: str = ""
    start_channels: tuple[str, ...] = ()
    finish_channels: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    offices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusChangeView:
    from_status: str | None
    to_status: str
    note: str
    channel: str
    actor: str | None
    at: datetime

    @property
    def label(self) -> str:
        return STATUS_LABELS.get(self.to_status, self.to_status)


@dataclass(frozen=True, slots=True)
class InteractionView:
    id: int
    channel: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    summary: str
    actor: str | None
    direction: str = "inbound"           # outbound: the node called the citizen (a callback)

    @property
    def channel_label(self) -> str:
        label = CHANNEL_LABELS.get(self.channel, self.channel)
        return f"{label} (saliente)" if self.direction == "outbound" else label

    @property
    def direction_label(self) -> str:
        return DIRECTION_LABELS.get(self.direction, self.direction)


@dataclass(frozen=True, slots=True)
class CaseView:
    folio: str
    status: str
    tramite: TramiteInfo
    created_channel: str
    current_channel: str
    missing: tuple[str, ...]
    data: dict[str, Any]
    appointment_office: str | None
    appointment_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    citizen_name: str | None = None
    citizen_curp: str | None = None      # full: for staff pages only; log with foundation.logs.mask_curp
    citizen_phone: str | None = None
    history: tuple[StatusChangeView, ...] = ()
    interactions: tuple[InteractionView, ...] = ()

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def can_finish_online(self) -> bool:
        return self.is_open and not self.missing and "web" in self.tramite.finish_channels

    @property
    def can_finish_at_kiosk(self) -> bool:
        return self.is_open and not self.missing and "kiosk" in self.tramite.finish_channels


@dataclass(frozen=True, slots=True)
class OpenedCase:
    case: CaseView
    pin: str            # the only time the PIN is available in clear: read it back to the caller / print it
    created: bool       # False when an idempotent retry found the case opened by the first attempt


StatusReason = Literal["ok", "malformed", "denied", "locked"]


@dataclass(frozen=True, slots=True)
class StatusResult:
    """Answer to a folio + verification lookup. `denied` is the same for an unknown folio and a wrong PIN."""
    reason: StatusReason
    case: CaseView | None = None
    attempts_left: int | None = None
    retry_after_s: int | None = None
    message: str = ""
    throttle_s: float = 0.0          # the web answers only after this long (a client with many recent failures)

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


@dataclass(frozen=True, slots=True)
class CallView:
    call_id: str
    caller_masked: str
    node: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    disposition: str | None
    transfer_target: str | None
    folio: str | None
    summary: str | None


@dataclass(frozen=True, slots=True)
class TurnView:
    id: int
    call_id: str
    speaker: str
    text: str
    intent: str | None
    confidence: float | None
    at: datetime


@dataclass(frozen=True, slots=True)
class StaffView:
    id: int
    username: str
    role: str
    display_name: str
    active: bool
    credential_stamp: str = ""   # changes with the password: a session signed in before a change is refused


@dataclass(frozen=True, slots=True)
class EscalationView:
    id: int
    call_id: str
    folio: str | None
    reason: str
    target: str
    requested_at: datetime
    taken_by: str | None
    taken_at: datetime | None
    closed_at: datetime | None
    disposition: str | None
    caller_masked: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
