"""Trámite information: requirements, cost, where, hours — with a short question when the name is ambiguous.

The trámite and the field asked are remembered in slots, so "¿y cuánto cuesta?" follows the last trámite and
naming only a trámite answers the field asked before. An open disambiguation keeps its candidate ids in
`tramite_choices`; the answer may be a name, an ordinal ("la segunda") or a key (1..3).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from dialogs.actions.context import entity_values, latest_intent, latest_text
from dialogs.actions.numbers import spoken_digits
from dialogs.actions.payloads import expect, say
from dialogs.actions.resources import UsesResources
from dialogs.actions.spoken import head_and_rest, list_sentence, say_sized
from dialogs.catalog import DISAMBIGUATION_OPTIONS, TramiteCatalog, TramiteMatch, spoken_list
from dialogs.catalog_match import normalize
from dialogs.catalog_schema import Tramite
from dialogs.tramite_resolution import from_values, from_words

FIELD_BY_INTENT = {
    "ask_tramite_requirements": "requirements", "ask_tramite_cost": "cost", "ask_tramite_where": "where",
    "ask_tramite_hours": "hours", "ask_tramite_info": "summary", "ask_tramite_duration": "duration",
    "ask_tramite_online": "online",
}
# The words of the question, when they say more than the intent: "¿y en cuántos días me la dan?" is about the
# processing time even if the NLU heard a generic question. Checked in this order; the first hit wins.
FIELD_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("duration", re.compile(r"\b(cuanto (tiempo )?(se )?tarda|cuantos dias|en cuanto tiempo|que tan rapido|"
                            r"tiempo de entrega|mismo dia|cuando (me lo|me la|lo|la) (entregan|dan)|demora|"
                            r"se tardan|luego luego|esta list[oa])")),
    ("online", re.compile(r"\b(en linea|por internet|internet|por la pagina|en la pagina|desde (mi )?casa|"
                          r"por telefono|sin ir|en persona|por computadora)")),
    ("hours", re.compile(r"\b(horario|a que hora|que dias (abren|atienden)|abren|cierran|sabado)")),
    ("cost", re.compile(r"\b(cuanto (cuesta|sale|cobran|me cobran|vale|hay que pagar|se paga|es)|costo|precio|"
                        r"es gratis|tiene costo)")),
    ("requirements", re.compile(r"\b(requisitos?|que (necesito|ocupo|piden|llevo|tengo que llevar|me piden)|"
                                r"papeles|documentos|papeleria)")),
    ("where", re.compile(r"\b(donde|a que oficina|que lugar)")),
)
SUMMARY_TAIL = "¿Quiere saber requisitos, costo, dónde o cuánto tarda?"
COUNT_WORDS = {1: "uno", 2: "dos", 3: "tres", 4: "cuatro", 5: "cinco", 6: "seis", 7: "siete", 8: "ocho"}
CHANNEL_NAMES = {"phone": "por teléfono", "web": "en el portal web", "office": "en oficina", "kiosk": "en un kiosco"}
ORDINALS = {"primer": 1, "primero": 1, "primera": 1, "uno": 1, "segundo": 2, "segunda": 2, "dos": 2,
            "tercero": 3, "tercera": 3, "tercer": 3, "tres": 3, "ultimo": -1, "ultima": -1}


def items(texts: list[str] | tuple[str, ...]) -> list[str]:
    """Catalog sentences as list items: without their final period, so a spoken list reads well."""
    return [t.strip().rstrip(".").strip() for t in texts if t.strip()]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def uncap(text: str) -> str:
    """Lower the first letter of a sentence that now continues another ('En la oficina' -> 'en la oficina')."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def channels_text(channels: Sequence[str]) -> str:
    return spoken_list([CHANNEL_NAMES.get(c, c) for c in channels], "o")


def field_from_text(text: str) -> str | None:
    plain = normalize(text)
    return next((field for field, words in FIELD_WORDS if words.search(plain)), None)


def asked_field(intent: str, text: str, previous: str | None) -> str:
    """The field the caller asks about. The intent says it, unless the words name the processing time or the
    online/phone question (which a sparse model confuses with requirements or where), or the intent is
    generic (a trámite named alone, a general question) and the words are specific."""
    by_words = field_from_text(text) if text and not text.startswith("/") else None
    by_intent = FIELD_BY_INTENT.get(intent)
    if by_words in ("duration", "online") or (by_words and by_intent in (None, "summary")):
        return by_words
    return by_intent or previous or "summary"


def online_answer(t: Tramite) -> str:
    remote = [c for c in t.channels_start if c in ("web", "phone")]
    finish_remote = [c for c in t.channels_finish if c in ("web", "phone")]
    if not remote:
        return f"No, este trámite se hace en persona: {uncap(short_where(t))}"
    text = f"Sí, {t.spoken_name} se puede iniciar {channels_text(remote)}."
    if "office" in t.channels_finish and not finish_remote:
        text += " Para terminarlo hay que ir a la oficina."
    elif finish_remote:
        text += f" Y se puede terminar {channels_text(finish_remote)}."
    return text


def short_where(t: Tramite) -> str:
    """The first sentence of where it is done: the office; the rest (web pages, details) follows on request."""
    first = t.where.strip().split(". ")[0].rstrip(".")
    return first + "."


def field_answer(catalog: TramiteCatalog, t: Tramite, field: str) -> tuple[str, str | None]:
    """(what the portal says about one field of a trámite, the rest kept for 'sí, los demás'). Never invents:
    a missing hour or processing time is said to be missing, with whom to ask."""
    agency = catalog.agency_of(t).spoken_name
    if field == "requirements":
        return list_sentence(f"Para {t.spoken_name} necesita", t.requirements)
    if field == "cost":
        return f"{cap(t.spoken_name)}: {t.cost.spoken}", None
    if field == "where":
        details = t.where.strip()[len(short_where(t)):].strip()
        return (f"{short_where(t)} Puede terminarlo {channels_text(list(t.channels_finish))}.",
                details or None)
    if field == "hours":
        if t.hours:
            return f"Horario para {t.spoken_name}: {t.hours}", None
        return (f"No tengo un horario confirmado para {t.spoken_name}. Le sugiero confirmar con "
                f"{agency} antes de ir."), None
    if field == "duration":
        if t.processing_time:
            return f"{cap(t.spoken_name)}: {t.processing_time}", None
        return (f"No tengo confirmado cuánto tarda el trámite de {t.spoken_name}. Pregúntelo en {agency}, "
                f"{uncap(short_where(t))}"), None
    if field == "online":
        return online_answer(t), None
    opening, rest = head_and_rest(t.requirements, 1)
    more = f", y {COUNT_WORDS.get(len(rest), 'otros')} más" if rest else ""
    return (f"{cap(t.spoken_name)}, con {agency}. Se inicia {channels_text(list(t.channels_start))}. "
            f"Piden {uncap(opening[0])}{more}."), None


def choice_by_position(text: str, choices: list[str]) -> str | None:
    """'la segunda', 'el dos', a key '2' -> the second candidate."""
    digits = spoken_digits(text)
    if len(digits) == 1 and 1 <= int(digits) <= len(choices):
        return choices[int(digits) - 1]
    for word in normalize(text).split():
        pos = ORDINALS.get(word)
        if pos is not None and pos <= len(choices):
            return choices[pos - 1] if pos > 0 else choices[-1]
    return None


def shown_choices(matches: list[TramiteMatch] | tuple[TramiteMatch, ...]) -> list[str]:
    """Candidate ids in the order the disambiguation question names them (one per distinct label)."""
    seen: set[str] = set()
    out = []
    for m in matches:
        if m.tramite.label not in seen:
            seen.add(m.tramite.label)
            out.append(m.tramite.id)
    return out[:DISAMBIGUATION_OPTIONS]


def resolve_tramite(catalog: TramiteCatalog, tracker: Tracker, digits: str | None = None
                    ) -> tuple[Tramite | None, list[TramiteMatch]]:
    """(the trámite meant, or None with the candidates to ask among). Uses, in order: an open disambiguation,
    the extracted entity, the words of the turn, the trámite of the conversation."""
    text = latest_text(tracker)
    plain = "" if text.startswith("/") else text
    choices = list(tracker.get_slot("tramite_choices") or [])
    if choices:
        picked = choice_by_position(digits or plain, choices)
        if picked is not None:
            return catalog.get(picked), []
        for said in [*entity_values(tracker, "tramite"), plain]:
            if said:
                found = catalog.resolve(said, among=choices)
                if found.best is not None:
                    return found.best, []
    from_entities = from_values(catalog, entity_values(tracker, "tramite"), plain)
    if from_entities is not None:
        return from_entities
    current = tracker.get_slot("tramite")
    follow_up = bool(current) and latest_intent(tracker) in FIELD_BY_INTENT \
        and latest_intent(tracker) != "ask_tramite_info"
    if plain and not follow_up:
        tramite, candidates = from_words(catalog, plain)
        if tramite is not None or candidates:
            return tramite, candidates
    if current:
        return catalog.get(str(current)), []
    return None, []


class ActionTramiteInfo(UsesResources, Action):
    def name(self) -> str:
        return "action_tramite_info"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: dict[str, Any]) -> list[EventType]:
        return answer_tramite(self.res.tramites, dispatcher, tracker)


def answer_tramite(catalog: TramiteCatalog, dispatcher: CollectingDispatcher, tracker: Tracker,
                   digits: str | None = None) -> list[EventType]:
    """Answer the trámite question of this turn (shared by the key-press router)."""
    field = asked_field(latest_intent(tracker), latest_text(tracker), tracker.get_slot("tramite_field"))
    tramite, candidates = resolve_tramite(catalog, tracker, digits)
    if tramite is None and candidates:
        ids = shown_choices(candidates)
        question = catalog.disambiguation_question([m for m in candidates if m.tramite.id in ids])
        keys = spoken_list([f"{n} para {catalog.get(i).label}" for n, i in  # type: ignore[union-attr]
                            zip(("uno", "dos", "tres"), ids, strict=False)], "o")
        say(dispatcher, f"{question} También puede marcar {keys}.",
            hint=expect("free", [catalog.get(i).label for i in ids if catalog.get(i)], max_digits=1),  # type: ignore[union-attr]
            question="disambiguation")
        return [SlotSet("tramite_choices", ids), SlotSet("tramite_field", field)]
    if tramite is None:
        say(dispatcher, "¿Sobre qué trámite? Por ejemplo la licencia de conducir, las placas o el acta de nacimiento.")
        return [SlotSet("tramite_field", field), SlotSet("tramite_choices", None)]
    text, more = field_answer(catalog, tramite, field)
    if tramite.can_start_by_phone and field in ("summary", "online", "where"):
        text += " Lo puede iniciar por teléfono: diga iniciar trámite."
    tail = SUMMARY_TAIL if field == "summary" else "¿Quiere saber algo más de este trámite?"
    sized = say_sized(dispatcher, text, tail, more=more)
    return [SlotSet("tramite", tramite.id), SlotSet("tramite_field", field), SlotSet("tramite_choices", None),
            *sized]
