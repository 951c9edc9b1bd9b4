"""What the clerk page and the agent console share about callbacks: the window a staff member types (a local
date and two local times) read into aware datetimes, and the Spanish labels of a job's state and last outcome.

A window is typed in the office's local time (views.LOCAL_TZ) because that is what the clerk reads on the wall;
the quiet hours are checked later in the citizen's zone (outbound.callback.timezone) by the service.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from case_bridge.callbacks import CallbackView
from case_bridge.errors import InvalidInput
from case_bridge.views import LOCAL_TZ

STATE_LABELS = {"standby": "Espera un cambio de estado", "pending": "Programada", "active": "Llamando ahora",
                "done": "Atendida", "failed": "No se logró", "invalid": "Número no válido",
                "opted_out": "No desea llamadas", "cancelled": "Cancelada"}
OUTCOME_LABELS = {"answered": "contestó", "busy": "ocupado", "no_answer": "no contestó",
                  "silent": "contestó sin responder", "failed": "falló", "opt_out": "pidió no recibir llamadas",
                  "": "—"}
DETAIL_LABELS = {"window closed": "terminó la ventana de llamada",
                 "the number asked not to be called": "el número pidió no recibir llamadas",
                 # an agent's call back (ivr.agent_callback)
                 "connected to the agent": "comunicado con el agente",
                 "transferred to the agent": "transferido al agente",
                 "the citizen did not want to talk now": "el ciudadano no quiso hablar ahora",
                 "the citizen hung up before choosing": "el ciudadano colgó sin elegir",
                 "agent has no SIP URI": "el agente no tiene teléfono configurado",
                 "agent account unknown or inactive": "la cuenta del agente no existe o está desactivada",
                 "cancelled by the agent": "cancelada por el agente"}
REASON_LABELS = {"status_changed": "Aviso de cambio de estado (lo pidió el ciudadano)",
                 "clerk_callback": "Oficina", "agent_callback": "Centro de atención",
                 "agent_return": "Devolución de llamada del agente"}
AGENT_NO_ANSWER = "agent did not answer: "


def detail_label(detail: str) -> str:
    if detail.startswith(AGENT_NO_ANSWER):           # "agent did not answer: SIP 486"
        return "el teléfono del agente no contestó (" + detail.removeprefix(AGENT_NO_ANSWER) + ")"
    return DETAIL_LABELS.get(detail, detail)


def parse_window(day: str, start: str, end: str) -> tuple[datetime, datetime]:
    """'2026-12-03', '10:00', '12:30' (as an <input type=date/time> sends them) -> aware datetimes. An end at or
    before the start is taken as the next day only when it is 00:00 (a window "until midnight")."""
    try:
        d = date.fromisoformat(day.strip())
        t0, t1 = time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    except ValueError:
        raise InvalidInput("Escriba la fecha (AAAA-MM-DD) y las horas (HH:MM) de la ventana.") from None
    begin = datetime.combine(d, t0, tzinfo=LOCAL_TZ)
    finish = datetime.combine(d + timedelta(days=1) if t1 == time(0, 0) else d, t1, tzinfo=LOCAL_TZ)
    return begin, finish


def _local(value: datetime | None) -> str | None:
    return value.astimezone(LOCAL_TZ).strftime("%d/%m/%Y %H:%M") if value else None


def callback_row(view: CallbackView) -> dict[str, Any]:
    """One job for a staff page (the number masked: staff see the full number on the case itself)."""
    return {"id": view.id, "state": view.state, "state_label": STATE_LABELS.get(view.state, view.state),
            "reason": view.reason, "reason_label": REASON_LABELS.get(view.reason, view.reason), "note": view.note,
            "requested_by": view.requested_by, "number": view.number_masked, "attempts": view.attempts,
            "last_outcome": OUTCOME_LABELS.get(view.last_outcome, view.last_outcome),
            "next_attempt": _local(view.next_attempt_at) if view.state in ("pending", "active") else None,
            "window_end": _local(view.not_after), "detail": detail_label(view.detail),
            "outcome": view.last_outcome}
