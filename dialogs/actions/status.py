"""Trámite status by phone: folio (spoken any way or keyed) + verification (PIN or last 4 of the CURP).

The folio's Damm check digit is checked before any lookup, so a misheard digit costs the caller a retry, not
one of the three verification attempts. The case bridge answers `denied` alike for an unknown folio and a
wrong PIN (no folio enumeration), so both get the same clear answer and a retry of folio and verification.
Three failures lock the folio there: nothing about the case is said and an agent is offered.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from case_bridge import folio as folios
from dialogs.actions.context import call_meta, latest_text
from dialogs.actions.numbers import digit_runs, grouped_for_speech, spoken_digits, spoken_to_chars
from dialogs.actions.payloads import FOLIO_MAX_DIGITS, VERIFICATION_MAX_DIGITS, expect, say
from dialogs.actions.resources import UsesResources
from dialogs.actions.spoken import head_and_rest
from dialogs.actions.tramites import COUNT_WORDS, uncap
from dialogs.catalog import spoken_list
from foundation.logs import kv

log = logging.getLogger("dialogs.actions.status")

FINISH_WEB = "Puede terminarlo en el portal web de Veratur con su folio y su NIP"
AGENT_KEY = "0"
WORDS_ATTEMPTS = {1: "Le queda un intento.", 2: "Le quedan dos intentos."}


MISSING_HEAD = 2
"""Missing items read with the status; the rest follows on a 'sí'."""


def status_text(res_tramites: Any, case: Any) -> tuple[str, str | None]:
    """(what the caller hears about a verified case — status, the first missing items, how to finish —, the
    rest of what is missing, read if the caller wants it). Sized for the ear: the folio is not read back (the
    caller has just said or keyed it); the trámite's name confirms which case was found."""
    entry = res_tramites.get(case.tramite.id) if res_tramites is not None else None
    name = entry.spoken_name if entry is not None else case.tramite.name
    parts = [f"Estado: {case.status_label.rstrip('.')}."]
    rest = None
    if case.missing:
        head, others = head_and_rest(list(case.missing), MISSING_HEAD + 1)
        if len(others) == 0 and len(head) > MISSING_HEAD:
            pass                                   # three items: all said, no "one thing more"
        elif len(head) > MISSING_HEAD:
            others = [head.pop(), *others]
        if others:
            head.append(f"{COUNT_WORDS.get(len(others), str(len(others)))} cosas más")
        if entry is not None:   # said with the catalog's template for this trámite
            parts.append(res_tramites.missing_items_text(entry, head))
        else:
            parts.append(f"Todavía le falta: {spoken_list(head)}.")
        rest = f"También le falta {spoken_list(others)}." if others else None
    if case.appointment_office and case.appointment_at:
        parts.append(f"Tiene cita en {case.appointment_office}.")
    finish = list(case.tramite.finish_channels)
    how = None
    if case.status not in ("completed", "closed", "cancelled", "rejected"):
        if "web" in finish:
            how = f"{FINISH_WEB}."
        elif "office" in finish:
            offices = list(case.tramite.offices) or ([entry.where] if entry is not None else [])
            if offices:
                how = f"Termínelo en la oficina: {uncap(offices[0].split('. ')[0].rstrip('.'))}."
    if how and rest:        # the turn also offers the rest: how to finish comes with it, after the list
        rest = f"{rest} {how}"
    elif how:
        parts.append(how)
    text = " ".join(p.strip() for p in parts if p)
    if name.lower() not in text.lower():      # the missing-items sentence usually names it already
        text = f"Su trámite de {name}. {text}"
    return text, rest


def said_folio(text: str, checked: bool = False, *, min_digits: int = folios.FOLIO_DIGITS,
               max_digits: int | None = folios.FOLIO_DIGITS, last: bool = False) -> str | None:
    """A stretch of numbers in a longer turn that may be the folio (`digit_runs`): by default the first one of
    exactly eight digits; with `checked`, only one whose check digit holds; with `min_digits`/`max_digits`
    (None: no upper bound), another length; with `last`, the last such stretch instead of the first."""
    runs = digit_runs(text)
    return next((run for run in (reversed(runs) if last else runs)
                 if len(run) >= min_digits and (max_digits is None or len(run) <= max_digits)
                 and (not checked or folios.is_valid(run))), None)


class ValidateStatusForm(UsesResources, FormValidationAction):
    def name(self) -> str:
        return "validate_status_form"

    async def extract_folio(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                            domain: DomainDict) -> dict[str, Any]:
        """A folio said in the same breath as the request ("quiero saber cómo va mi trámite, mi folio es ...")
        fills the slot on the turn that opens the form, so the caller is not asked for what they just said.
        Only there (the slot's own mappings take the answers to the folio question) and only an eight-digit
        stretch: a PIN said too early is not a folio."""
        if tracker.get_slot("requested_slot") is not None or tracker.get_slot("folio"):
            return {}
        text = latest_text(tracker)
        if text.startswith("/"):
            return {}
        folio = said_folio(text)
        return {"folio": folio} if folio else {}

    async def validate_folio(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: DomainDict) -> dict[str, Any]:
        digits = spoken_digits(str(value or ""))
        if digits == AGENT_KEY:     # 0 means "agent" at every prompt: finish the form into a transfer
            return {"folio": digits, "verification": AGENT_KEY, "status_result": "transfer"}
        if len(digits) == folios.FOLIO_DIGITS and folios.is_valid(digits):
            return {"folio": digits}
        if len(digits) != folios.FOLIO_DIGITS:
            heard = f"Escuché {len(digits)} dígitos. " if digits else ""
            say(dispatcher, f"{heard}El folio tiene ocho dígitos.",
                hint=expect("digits", max_digits=FOLIO_MAX_DIGITS))
        else:
            say(dispatcher, f"El folio {grouped_for_speech(digits)} no es válido; tal vez escuché mal un dígito.",
                hint=expect("digits", max_digits=FOLIO_MAX_DIGITS))
        return {"folio": None}

    async def validate_verification(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: DomainDict) -> dict[str, Any]:
        chars = spoken_to_chars(str(value or ""), letters=True)
        if chars == AGENT_KEY:
            return {"verification": AGENT_KEY, "status_result": "transfer"}
        if len(chars) != VERIFICATION_MAX_DIGITS:
            say(dispatcher, "Necesito cuatro caracteres: su NIP o el final de su CURP.",
                hint=expect("digits", max_digits=VERIFICATION_MAX_DIGITS))
            return {"verification": None}
        folio = str(tracker.get_slot("folio") or "")
        cases = self.res.cases
        meta = call_meta(tracker)
        if cases is None:
            say(dispatcher, "En este momento no puedo consultar los trámites.")
            return {"verification": "n/a", "status_result": "unavailable"}
        pin, curp_last4 = (chars, None) if chars.isdigit() else (None, chars)
        try:
            result = await asyncio.to_thread(functools.partial(
                cases.status_for, folio, pin=pin, curp_last4=curp_last4, client=meta.caller_number,
                call=meta.call_id))     # failures per call too: the caller number is spoofable
        except Exception as exc:  # the database is down: say so, keep no data, offer the agent
            log.error(kv(event="status_failed", call_id=meta.call_id, case=folio, error=type(exc).__name__))
            say(dispatcher, "En este momento no puedo consultar los trámites.")
            return {"verification": "n/a", "status_result": "unavailable"}
        log.info(kv(event="status_lookup", call_id=meta.call_id, case=folio, reason=result.reason))
        if result.reason == "ok":
            text, rest = status_text(self.res.tramites, result.case)
            say(dispatcher, text, case_folio=folio)
            return {"verification": "ok", "status_result": "ok", "case_folio": folio, "more_text": rest}
        if result.reason == "locked":
            return {"verification": "locked", "status_result": "locked"}
        left = result.attempts_left
        tail = f" {WORDS_ATTEMPTS.get(left, f'Le quedan {left} intentos.')}" if left else ""
        say(dispatcher, "No encontré un trámite con ese folio y esa verificación." + tail + " Intentemos de nuevo.")
        return {"folio": None, "verification": None}


class ActionStatusReport(Action):
    """After the status form: offer more help, or an agent when the folio is locked or the record is down."""

    def name(self) -> str:
        return "action_status_report"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        result = tracker.get_slot("status_result")
        if result == "locked":
            dispatcher.utter_message(response="utter_status_locked")
        elif result == "transfer":
            dispatcher.utter_message(response="utter_transfer")
        elif result == "unavailable":
            say(dispatcher, "Si quiere, le comunico con un asesor: diga asesor o marque cero.",
                hint=expect("menu", ("asesor", "cero", "no")), question="agent_offer", offer_reason="dialogue_error")
        elif tracker.get_slot("more_text"):
            say(dispatcher, "¿Quiere que le diga lo demás que le falta?", hint=expect("yes_no"), question="more")
        else:
            say(dispatcher, "¿Le ayudo con algo más?", question="anything_else")
        return [SlotSet("folio", None), SlotSet("verification", None), SlotSet("status_result", None)]
