"""A small set of calls with known dashboard answers, written through the same service calls the engine's recorder
makes (link_call, add_turn, record_call_stats, close_call) — shared by the analytics, web and browser tests.

Day `day` (local Veracruz date), all in the morning (UTC-6):
    A 09:00-09:05 completed   2 keypad + 1 speech turns, intent consultar_estado, opens an acta case; the case
                              is continued on the web 2 h after the call
    B 09:02-09:04 transferred no_match, "Diga el trámite" asked 2 / no-match 1, city xalapa, an un-understood
                              phrase holding a phone number, a transcript cell starting with "="
    C 09:03-09:10 abandoned   "Marque su folio" asked 2 / no-input 1
    D 10:30-10:31 completed   intent turismo, city xalapa
    and one call a week earlier that the period must leave out.
Known: 4 calls, containment 0.5, transfer 0.25, abandonment 0.25, AHT 225 s, peak 3 at 09:03, cross-channel 1 web.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from case_bridge.service import CaseService
from case_bridge.views import LOCAL_TZ, CitizenInfo

STEP_TRAMITE = "Diga el trámite que busca."
STEP_FOLIO = "Marque su folio de ocho dígitos."
NOT_UNDERSTOOD = "quiero hablar al 2281234567 por favor"
FORMULA_TEXT = "=HYPERLINK(\"http://x\")"


@dataclass(frozen=True)
class KnownCalls:
    since: datetime
    until: datetime
    ids: dict[str, str]
    folio: str


def _stats(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"turns_count": 0, "speech_turns": 0, "dtmf_turns": 0, "no_match_count": 0,
                            "no_input_count": 0, "barge_ins": 0, "latency_p50_ms": None, "latency_max_ms": None,
                            "transfer_reason": None, "worker": "w0", "tallies": []}
    base.update(kw)
    return base


def seed_known_calls(svc: CaseService, day: date, *, caller: str = "2285550101") -> KnownCalls:
    start = datetime.combine(day, time(9, 0), LOCAL_TZ).astimezone(UTC)
    tag = uuid.uuid4().hex[:8]
    ids = {k: f"{k}-{tag}@ops.test" for k in "ABCDX"}

    def call(key: str, at_min: float, end_min: float, disposition: str, stats: dict[str, Any],
             turns: list[tuple[str, str, str | None, float | None]], target: str | None = None,
             offset: timedelta = timedelta(0)) -> None:
        t0 = start + offset + timedelta(minutes=at_min)
        svc.link_call(ids[key], caller, called="veratur", node="nodo1", started_at=t0, answered_at=t0)
        for i, (speaker, text, intent, conf) in enumerate(turns):
            svc.add_turn(ids[key], speaker, text, intent, conf, at=t0 + timedelta(seconds=10 * (i + 1)),
                         idempotency_key=f"{ids[key]}#{i + 1}")
        svc.record_call_stats(ids[key], stats)
        svc.close_call(ids[key], disposition, transfer_target=target,
                       ended_at=start + offset + timedelta(minutes=end_min))

    call("A", 0, 5, "completed", _stats(turns_count=3, speech_turns=1, dtmf_turns=2, latency_p50_ms=420,
                                        latency_max_ms=900, tallies=[["intent", "consultar_estado", 1],
                                                                     ["asked", STEP_TRAMITE, 1]]),
         [("portal", "Bienvenido. " + STEP_TRAMITE, None, None),
          ("caller", "quiero saber de mi trámite", "consultar_estado", 0.91),
          ("portal", STEP_FOLIO, None, None), ("caller", "[DTMF 12345678]", "inform_folio", None)])
    opened = svc.open_case("acta_nacimiento", "phone", call_id=ids["A"], idempotency_key=f"ops:{tag}",
                           citizen=CitizenInfo("Carmen Ruiz Soto", phone=caller), summary="acta por teléfono")
    svc.add_interaction(opened.case.folio, "web", "consulted", "consultó en el portal",
                        started_at=start + timedelta(hours=2))
    call("B", 2, 4, "transferred", _stats(turns_count=2, speech_turns=2, no_match_count=1, latency_p50_ms=610,
                                          latency_max_ms=1200, transfer_reason="no_match",
                                          tallies=[["asked", STEP_TRAMITE, 2], ["no_match", STEP_TRAMITE, 1],
                                                   ["city", "xalapa", 1], ["intent", "nlu_fallback", 1]]),
         [("portal", STEP_TRAMITE, None, None), ("caller", NOT_UNDERSTOOD, "nlu_fallback", 0.35),
          ("caller", FORMULA_TEXT, "nlu_fallback", 0.52)], target="sip:agente@127.0.0.1")
    call("C", 3, 10, "abandoned", _stats(no_input_count=1, tallies=[["asked", STEP_FOLIO, 2],
                                                                     ["no_input", STEP_FOLIO, 1]]),
         [("portal", STEP_FOLIO, None, None)])
    call("D", 90, 91, "completed", _stats(turns_count=1, speech_turns=1, latency_p50_ms=380, latency_max_ms=380,
                                          tallies=[["intent", "turismo", 1], ["city", "xalapa", 1]]),
         [("portal", "¿Qué ciudad?", None, None), ("caller", "xalapa", "turismo", 0.97)])
    call("X", 0, 3, "completed", _stats(tallies=[["intent", "fuera_de_periodo", 1]]), [],
         offset=timedelta(days=-7))
    since = datetime.combine(day, time(0, 0), LOCAL_TZ)
    return KnownCalls(since.astimezone(UTC), (since + timedelta(days=1)).astimezone(UTC), ids, opened.case.folio)
