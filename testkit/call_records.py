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

With `callbacks=True` the node also calls out (case_bridge.callbacks jobs, the calls recorded as
ivr/callback_call.py records them: direction outbound, linked to the case, PIN noted), none of which may change
a figure above:
    job 1 on A's case      11:00 busy, 11:20 answered (call E 11:20-11:22 completed)
    job 2 on A's case      12:00 no answer, 12:20 silent (call G 12:20-12:21 abandoned), 13:30 failed -> failed
    job 3 on a web case    14:00 opt out (call F 14:00-14:01 completed; the case never had a citizen's call)
Known outbound: 6 attempts (one of each outcome), 3 calls, mean duration 80 s; peak stays 3.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from case_bridge.service import CaseService
from case_bridge.views import LOCAL_TZ, CitizenInfo
from foundation.config import CallbackConfig

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


CALLBACK_PREFIXES = ["52228", "228"]
CALLBACK_SCHEDULE = CallbackConfig(attempts=3, spacing_s=[600], quiet_start="21:00", quiet_end="08:00",
                                   timezone="America/Mexico_City", lease_s=60)
OUTBOUND_NOTE = "Llamada saliente: aviso de cambio de estado"      # ivr.callback_call.DIRECTION_NOTE


def seed_callbacks(svc: CaseService, start: datetime, folio: str, tag: str) -> dict[str, str]:
    """The outbound half of the known day (module docstring), through the service calls the dialer and the
    callback conversation make; `start` is 09:00 local. Returns the outbound calls' ids (E, F, G)."""
    number = f"22855{int(tag, 16) % 100_000:05d}"       # its own number: job 3 opts it out for good
    owner = f"seed-{tag}"
    ids = {k: f"{k}-{tag}@callback.test" for k in "EFG"}

    def attempt(job_id: int, at_min: float, outcome: str, call: tuple[str, float, str] | None = None) -> None:
        at = start + timedelta(minutes=at_min)
        leased = svc.lease_due(owner, now=at, lease_s=60, limit=1)
        assert [v.id for v in leased] == [job_id], "another due callback job is in the seed's way"
        sip_call_id = None
        if call is not None:
            key, minutes, disposition = call
            sip_call_id, end = ids[key], at + timedelta(minutes=minutes)
            svc.link_call(sip_call_id, "2280000000", called=number, node="nodo1", started_at=at, answered_at=at,
                          direction="outbound")
            svc.link_call_case(sip_call_id, leased[0].folio, summary=OUTBOUND_NOTE)
            svc.add_turn(sip_call_id, "portal", "Buenos días. Le llama el gobierno del estado.", at=at,
                         idempotency_key=f"{sip_call_id}#1")
            if disposition == "completed":
                svc.add_turn(sip_call_id, "caller", "(PIN, 4 dígitos)", "dtmf_pin", at=at + timedelta(seconds=20),
                             idempotency_key=f"{sip_call_id}#2")
            svc.set_call_summary(sip_call_id, f"{OUTBOUND_NOTE} ({outcome})")
            svc.close_call(sip_call_id, disposition, ended_at=end)
            at = end
        svc.record_attempt(job_id, owner, outcome, now=at, schedule=CALLBACK_SCHEDULE, sip_call_id=sip_call_id)

    def job(case_folio: str, at_min: float) -> int:
        return svc.request_callback(case_folio, number, allowed_prefixes=CALLBACK_PREFIXES,
                                    now=start + timedelta(minutes=at_min)).id

    first = job(folio, 120)
    attempt(first, 120, "busy")
    attempt(first, 140, "answered", ("E", 2, "completed"))
    second = job(folio, 180)
    attempt(second, 180, "no_answer")
    attempt(second, 200, "silent", ("G", 1, "abandoned"))
    attempt(second, 270, "failed")
    web_case = svc.open_case("acta_nacimiento", "web", idempotency_key=f"ops-web:{tag}",
                             citizen=CitizenInfo("Luis Ortiz Paz", phone=number)).case.folio
    third = job(web_case, 300)
    attempt(third, 300, "opt_out", ("F", 1, "completed"))
    return ids


def seed_known_calls(svc: CaseService, day: date, *, caller: str = "2285550101",
                     callbacks: bool = False) -> KnownCalls:
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
    if callbacks:
        ids.update(seed_callbacks(svc, start, opened.case.folio, tag))
    since = datetime.combine(day, time(0, 0), LOCAL_TZ)
    return KnownCalls(since.astimezone(UTC), (since + timedelta(days=1)).astimezone(UTC), ids, opened.case.folio)
