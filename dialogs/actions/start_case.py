"""Starting a trámite by phone: pick a phone-startable trámite, ask its catalog fields one by one, confirm,
open the case through the case bridge and read folio and PIN back slowly (repeated on request).

The fields come from the trámite's `phone_start` entry in nlu_data/tramites.yml, so administrators add or
change what is asked without code: the form has one generic slot (`field_answer`) asked once per field.
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from dialogs.actions.context import call_meta, entity_values, intent_confidence, latest_intent
from dialogs.actions.numbers import grouped_for_speech, spoken_digits, spoken_to_chars
from dialogs.actions.payloads import YES_NO_PHRASES, expect, say
from dialogs.actions.resources import UsesResources
from dialogs.actions.tramites import channels_text, choice_by_position, shown_choices
from dialogs.catalog import TramiteCatalog, spoken_list
from dialogs.catalog_match import normalize
from dialogs.catalog_schema import PhoneField, Tramite
from foundation.logs import kv

log = logging.getLogger("dialogs.actions.start_case")

CURP_RE = re.compile(r"^[A-Z]{4}\d{6}[HMX][A-Z]{5}[A-Z0-9]\d$")
SKIP_WORDS = ("no se", "no lo se", "no tengo", "no la tengo", "no lo tengo", "ninguno", "ninguna", "paso")
MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
          "noviembre", "diciembre")
REQUEST_CONFIDENCE = 0.9
"""A field answer that fails to parse and is this surely "repeat"/"help" is a request: just ask again."""
FORM_SLOTS = ("start_tramite", "field_answer", "start_field", "start_answers", "confirm_start", "tramite_choices")


def current_field(catalog: TramiteCatalog, tracker: Tracker) -> tuple[Tramite | None, PhoneField | None]:
    tramite = catalog.get(str(tracker.get_slot("start_tramite") or ""))
    if tramite is None or tramite.phone_start is None:
        return tramite, None
    name = tracker.get_slot("start_field")
    field = next((f for f in tramite.phone_start.fields if f.name == name), None)
    return tramite, field


def field_hint(field: PhoneField) -> dict[str, Any]:
    if field.kind == "yes_no":
        return expect("yes_no", YES_NO_PHRASES)
    if field.kind == "digits":
        return expect("digits", max_digits=20)
    if field.kind == "choice":
        return expect("free", field.choices or ())
    return expect("free")


def parse_field(field: PhoneField, value: str, intent: str) -> str | None:
    """The normalized answer for one field, or None if it does not look like an answer of that kind."""
    text = value.strip()
    plain = normalize(text)
    if field.kind == "curp":
        chars = text.replace(" ", "").upper() if re.fullmatch(r"[A-Za-z0-9 ]{18,25}", text) else ""
        chars = chars if CURP_RE.match(chars) else spoken_to_chars(text, letters=True)
        return chars if CURP_RE.match(chars) else None
    if field.kind == "full_name":
        words = re.sub(r"[,.;]", " ", text).split()
        ok = len(words) >= 2 and all(w.replace("-", "").replace("'", "").isalpha() for w in words)
        return " ".join(w[:1].upper() + w[1:].lower() for w in words) if ok else None
    if field.kind == "date":
        return text if re.search(r"\d", text) or any(m in plain for m in MONTHS) else None
    if field.kind == "digits":
        return spoken_digits(text) or None
    if field.kind == "plate":
        chars = spoken_to_chars(text, letters=True)
        return chars if 5 <= len(chars) <= 8 else None
    if field.kind == "yes_no":
        if intent == "affirm" or plain in ("1", "si"):
            return "sí"
        if intent == "deny" or plain in ("2", "no"):
            return "no"
        return None
    if field.kind == "choice":
        choices = list(field.choices or [])
        picked = choice_by_position(text, choices)
        if picked:
            return picked
        return next((c for c in choices if normalize(c) in plain), None)
    if field.kind == "email":
        mail = plain.replace(" arroba ", "@").replace(" punto ", ".").replace(" ", "") if "@" not in text \
            else text.replace(" ", "")
        return mail if re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", mail) else None
    return text or None


class ValidateStartForm(UsesResources, FormValidationAction):
    def name(self) -> str:
        return "validate_start_form"

    async def extract_start_tramite(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: DomainDict) -> dict[str, Any]:
        """On activation, the trámite named in the request itself ("quiero iniciar el acta de nacimiento por
        teléfono") fills the slot, so the caller is not asked again."""
        if tracker.get_slot("start_tramite") or tracker.get_slot("requested_slot") \
                or latest_intent(tracker) != "start_tramite":
            return {}
        named = entity_values(tracker, "tramite")
        return {"start_tramite": named[0]} if named else {}

    async def validate_start_tramite(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                     domain: DomainDict) -> dict[str, Any]:
        catalog = self.res.tramites
        said = str(value or "")
        choices = list(tracker.get_slot("tramite_choices") or [])
        tramite = catalog.get(choice_by_position(said, choices) or "") if choices else None
        if tramite is None:
            found = catalog.resolve(said, among=choices or None)
            if found.ambiguous:
                ids = shown_choices(found.matches)
                say(dispatcher, catalog.disambiguation_question([m for m in found.matches if m.tramite.id in ids]),
                    hint=expect("free", [catalog.get(i).label for i in ids]),  # type: ignore[union-attr]
                    question="disambiguation")
                return {"start_tramite": None, "tramite_choices": ids}
            tramite = found.best
        if tramite is None:
            names = spoken_list([t.spoken_name for t in catalog.phone_startable()[:4]], "o")
            say(dispatcher, f"No encontré ese trámite. Por teléfono puede iniciar, por ejemplo: {names}.")
            return {"start_tramite": None, "tramite_choices": None}
        if tramite.phone_start is None:
            say(dispatcher, f"{tramite.spoken_name} no se puede iniciar por teléfono; se inicia "
                            f"{channels_text(list(tramite.channels_start))}.")
            return {"start_tramite": None, "tramite_choices": None}
        fields = tramite.phone_start.fields
        say(dispatcher, f"Vamos a iniciar {tramite.spoken_name}. Le haré "
                        f"{'una pregunta' if len(fields) == 1 else f'{len(fields)} preguntas'}.")
        return {"start_tramite": tramite.id, "start_field": fields[0].name, "start_answers": {},
                "tramite_choices": None}

    async def validate_field_answer(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: DomainDict) -> dict[str, Any]:
        tramite, field = current_field(self.res.tramites, tracker)
        if tramite is None or field is None or tramite.phone_start is None:
            return {"field_answer": None}
        answers = dict(tracker.get_slot("start_answers") or {})
        text = str(value or "")
        intent = latest_intent(tracker)
        if intent == "deny" and field.kind != "yes_no" and intent_confidence(tracker) >= REQUEST_CONFIDENCE:
            return {"field_answer": "cancelado", "confirm_start": False}   # ends the form: nothing is opened
        parsed = parse_field(field, text, intent)
        if parsed is None and not field.required and normalize(text) in SKIP_WORDS:
            parsed = ""
        if parsed is None:
            if intent_confidence(tracker) < REQUEST_CONFIDENCE or intent not in ("repeat", "help"):
                say(dispatcher, "Perdón, no me quedó claro.", hint=field_hint(field))
            return {"field_answer": None}    # the form asks the same field again
        answers[field.name] = parsed
        names = [f.name for f in tramite.phone_start.fields]
        following = names[names.index(field.name) + 1:] if field.name in names else []
        if following:
            return {"field_answer": None, "start_field": following[0], "start_answers": answers}
        return {"field_answer": "listo", "start_field": None, "start_answers": answers}

    async def validate_confirm_start(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                     domain: DomainDict) -> dict[str, Any]:
        if isinstance(value, bool):
            return {"confirm_start": value}
        digits = spoken_digits(str(value or ""))
        if digits in ("1", "2"):
            return {"confirm_start": digits == "1"}
        return {"confirm_start": None}


class ActionAskFieldAnswer(UsesResources, Action):
    """Asks the current catalog field (the form asks `field_answer` once per field)."""

    def name(self) -> str:
        return "action_ask_field_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        _, field = current_field(self.res.tramites, tracker)
        if field is None:
            say(dispatcher, "¿Me repite el dato, por favor?")
        else:
            optional = "" if field.required else " Si no lo tiene, diga no lo tengo."
            say(dispatcher, field.prompt + optional, hint=field_hint(field))
        return []


class ActionAskConfirmStart(UsesResources, Action):
    def name(self) -> str:
        return "action_ask_confirm_start"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        tramite = self.res.tramites.get(str(tracker.get_slot("start_tramite") or ""))
        answers = dict(tracker.get_slot("start_answers") or {})
        name = next((v for k, v in answers.items() if "nombre" in k or k == "full_name"), "")
        who = f" a nombre de {name}" if name else ""
        label = tramite.spoken_name if tramite else "su trámite"
        say(dispatcher, f"¿Confirma que abro la solicitud de {label}{who}? Diga sí o no, o marque uno para sí y "
                        "dos para no.", hint=expect("yes_no", ("sí", "no")))
        return []


def readback_text(folio: str, pin: str, tramite: Tramite) -> str:
    """Folio and PIN digit by digit with pauses, the folio twice, then how to finish."""
    spoken_folio = grouped_for_speech(folio)
    spoken_pin = ", ".join(pin)
    finish = []
    if "web" in tramite.channels_finish:
        finish.append("en el portal web de Veratur con su folio y su NIP")
    if "office" in tramite.channels_finish:
        finish.append(f"en oficina: {tramite.where}")
    finish_text = f" Puede terminarlo {spoken_list(finish, 'o')}" if finish else ""
    next_step = tramite.phone_start.next_step if tramite.phone_start else ""
    return (f"Anote su folio: {spoken_folio}. Repito: {spoken_folio}. Su NIP es: {spoken_pin}. "
            f"{next_step}{finish_text} ¿Quiere que le repita el folio y el NIP?").replace("..", ".")


class ActionOpenCase(UsesResources, Action):
    def name(self) -> str:
        return "action_open_case"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        reset = [SlotSet(s, None) for s in FORM_SLOTS]
        tramite = self.res.tramites.get(str(tracker.get_slot("start_tramite") or ""))
        if not tracker.get_slot("confirm_start") or tramite is None:
            dispatcher.utter_message(response="utter_start_cancelled")
            return reset
        cases = self.res.cases
        meta = call_meta(tracker)
        if cases is None:
            say(dispatcher, "En este momento no puedo abrir solicitudes. Si quiere, le comunico con un asesor: diga "
                            "asesor o marque cero.", hint=expect("menu", ("asesor", "cero", "no")),
                question="agent_offer")
            return reset
        answers = {str(k): str(v) for k, v in dict(tracker.get_slot("start_answers") or {}).items()}
        try:
            opened = await asyncio.to_thread(open_phone_case, cases, tramite, answers, meta.call_id,
                                             meta.caller_number, tracker.sender_id)
        except Exception as exc:
            log.error(kv(event="open_case_failed", call_id=meta.call_id, tramite=tramite.id,
                         error=f"{type(exc).__name__}: {exc}"[:200]))
            say(dispatcher, "No pude abrir la solicitud en este momento. Si quiere, le comunico con un asesor: diga "
                            "asesor o marque cero.", hint=expect("menu", ("asesor", "cero", "no")),
                question="agent_offer")
            return reset
        folio = opened.case.folio
        log.info(kv(event="case_opened_by_phone", call_id=meta.call_id, case=folio, tramite=tramite.id))
        lead = f"Listo, abrí su solicitud de {tramite.spoken_name}. "
        say(dispatcher, lead + readback_text(folio, opened.pin, tramite),
            hint=expect("yes_no", YES_NO_PHRASES), case_folio=folio, question="readback",
            redacted=lead + readback_text(folio, "****", tramite))     # the transcript never keeps the PIN
        return [*reset, SlotSet("case_folio", folio)]


def open_phone_case(cases: Any, tramite: Tramite, answers: dict[str, str], call_id: str | None,
                    caller: str | None, conversation_id: str) -> Any:
    """Open the case (blocking: run in a thread). Idempotent per conversation and trámite, so a retried turn
    does not open two cases. A call the record does not know (text chat) opens without the call link; a
    trámite missing from the record's table is seeded from the catalog once and retried."""
    from case_bridge.errors import CallNotFound, UnknownTramite
    from case_bridge.views import CitizenInfo

    fields = {f.name: f for f in (tramite.phone_start.fields if tramite.phone_start else [])}
    name = next((v for k, v in answers.items() if k in fields and fields[k].kind == "full_name" and v), "")
    curp = next((v for k, v in answers.items() if k in fields and fields[k].kind == "curp" and v), None)
    details = ", ".join(f"{k}: {v}" for k, v in answers.items() if v and k in fields
                        and fields[k].kind not in ("curp", "full_name"))
    citizen = CitizenInfo(name or "Sin nombre (llamada)", curp=curp, phone=caller)
    summary = f"inició por teléfono {tramite.name}" + (f" ({details})" if details else "")
    key = f"phone:{call_id or conversation_id}:{tramite.id}"
    link: str | None = call_id
    for _ in range(3):
        try:
            return cases.open_case(tramite.id, "phone", citizen=citizen, idempotency_key=key, call_id=link,
                                   summary=summary[:500])
        except CallNotFound:
            link = None
        except UnknownTramite:
            from dialogs.catalog_seed import seed_catalog
            seed_catalog(cases)
    return cases.open_case(tramite.id, "phone", citizen=citizen, idempotency_key=key, call_id=None,
                           summary=summary[:500])
